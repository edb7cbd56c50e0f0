//! Tokenizers. An input starting with `GGUF` is a GGUF file whose `tokenizer.ggml.*` metadata
//! builds a [`GgufTokenizer`]; any other input is a `tokenizer.json`, loaded both as the
//! embedding models' [`TextTokenizer`] and as a chat model's Hugging Face tokenizer. Each
//! tokenizer that builds encodes and decodes a few fixed strings and the input's last bytes.
#![no_main]

use kiln_core::gguf_tokenizer::GgufTokenizer;
use kiln_core::tokenize::TextTokenizer;
use kiln_core::weights::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const TEXTS: [&str; 4] = [
    "Hello world! 12345",
    "<|im_start|>user\nhéllo ✓ <s></s><bos><end_of_turn>\n",
    "  \u{2581}leading spaces\t<0x0A> [CLS] [SEP] 日本語 🤖",
    "",
];

fn exercise(tok: &GgufTokenizer, tail: &str) {
    for text in TEXTS.iter().copied().chain([tail]) {
        for add_bos in [false, true] {
            if let Ok(ids) = tok.encode(text, add_bos) {
                let _ = tok.decode(&ids, false);
                let _ = tok.decode(&ids, true);
            }
        }
    }
    let _ = tok.decode(&[0, 1, 2, 3, u32::MAX], false);
    for id in [0, 1, u32::MAX] {
        let _ = (tok.token(id), tok.is_stop(id));
    }
}

fuzz_target!(|data: &[u8]| {
    let tail = String::from_utf8_lossy(&data[data.len().saturating_sub(48)..]).into_owned();
    if data.starts_with(b"GGUF") {
        let Ok(file) = GgufFile::parse(Path::new("fuzz.gguf"), data.to_vec()) else {
            return;
        };
        if let Ok(tok) = GgufTokenizer::from_gguf(&file) {
            exercise(&tok, &tail);
        }
        return;
    }
    if let Ok(tok) = TextTokenizer::from_bytes(data, 16, true) {
        for text in TEXTS.iter().copied().chain([tail.as_str()]) {
            let _ = tok.encode(text, true);
            let _ = tok.encode(text, false);
        }
    }
    let config = serde_json::json!({"bos_token": "<s>", "eos_token": {"content": "</s>"}});
    let generation = serde_json::json!({"eos_token_id": [0, 1, 4294967295u64]});
    if let Ok(tok) = GgufTokenizer::from_hf_parts(data, &config, &generation) {
        exercise(&tok, &tail);
    }
});
