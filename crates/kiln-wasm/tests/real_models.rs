//! kiln-wasm's Rust side, run natively on the real models (the browser tests run the same code
//! compiled to WebAssembly): loading from bytes equals loading from disk, and a reply streams.

use kiln_core::chat_template::ChatMessage;
use kiln_core::{ChatModel, EmbedderOptions, SentenceEmbedder};
use kiln_wasm::{load_embedder, ModelFiles, Reply, ReplyOptions};
use std::path::PathBuf;
use std::rc::Rc;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn smollm2_bytes() -> Vec<u8> {
    let f = models().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        f.is_file(),
        "run `cargo run --release -p kiln-cli -- fetch SmolLM2-135M-Instruct` (or scripts/test.sh)"
    );
    std::fs::read(f).unwrap()
}

#[test]
fn minilm_from_bytes_equals_minilm_from_disk() {
    let dir = models().join("all-MiniLM-L6-v2");
    assert!(
        dir.is_dir(),
        "run `cargo run --release -p kiln-cli -- fetch all-MiniLM-L6-v2` (or scripts/test.sh)"
    );
    let mut files = ModelFiles::new();
    // The files the playground downloads (the server lists these).
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        files.add(name.into(), std::fs::read(dir.join(name)).unwrap());
    }
    assert_eq!(files.count(), 6);
    let from_bytes = load_embedder(&files).unwrap();
    let from_disk = SentenceEmbedder::load(&dir, &EmbedderOptions::default()).unwrap();
    let texts = [
        "The cat sits on the mat.",
        "Stock markets fell sharply today.",
    ];
    assert_eq!(from_bytes.dimension(), 384);
    assert!(from_bytes.normalizes());
    assert_eq!(
        from_bytes.embed(&texts).unwrap(),
        from_disk.embed(&texts).unwrap()
    );
}

#[test]
fn a_greedy_reply_streams_in_pieces_that_add_up_to_the_decoded_text() {
    let model = Rc::new(ChatModel::from_gguf_bytes(smollm2_bytes()).unwrap());
    let options = ReplyOptions {
        max_tokens: 24,
        temperature: 0.0,
        ..ReplyOptions::default()
    };
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let mut reply = Reply::start(model.clone(), &messages, &options).unwrap();
    assert!(reply.prompt_tokens() > 5);
    let mut pieces = Vec::new();
    while let Some(p) = reply.step().unwrap() {
        pieces.push(p);
    }
    let text: String = pieces.concat();
    assert!(pieces.len() > 5, "{pieces:?}");
    assert!(matches!(reply.finish_reason(), Some("stop" | "length")));
    assert!(reply.completion_tokens() <= 24);
    // The same greedy tokens as a plain forward/argmax loop over the model.
    let prompt = model.encode_chat(&messages).unwrap();
    let mut cache = model.model.new_cache(prompt.len() + 24);
    let (mut input, mut tokens) = (prompt, Vec::new());
    for _ in 0..reply.completion_tokens() {
        let logits = model.model.forward(&input, &mut cache).unwrap();
        let t = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        tokens.push(t);
        input = vec![t];
    }
    assert_eq!(text, model.tokenizer.decode(&tokens, true).unwrap());
    // The same greedy reply again: deterministic.
    let mut again = Reply::start(model, &messages, &options).unwrap();
    let mut text2 = String::new();
    while let Some(p) = again.step().unwrap() {
        text2.push_str(&p);
    }
    assert_eq!(text, text2);
}

#[test]
fn a_cancelled_reply_yields_nothing_more() {
    let model = Rc::new(ChatModel::from_gguf_bytes(smollm2_bytes()).unwrap());
    let messages = [ChatMessage::new("user", "Tell me a long story.")];
    let mut reply = Reply::start(model, &messages, &ReplyOptions::default()).unwrap();
    assert!(reply.step().unwrap().is_some());
    reply.cancel();
    assert_eq!(reply.step().unwrap(), None);
    assert_eq!(reply.finish_reason(), Some("cancelled"));
    assert_eq!(reply.completion_tokens(), 1);
}

#[test]
fn bad_options_are_errors_not_panics() {
    let model = Rc::new(ChatModel::from_gguf_bytes(smollm2_bytes()).unwrap());
    let messages = [ChatMessage::new("user", "hi")];
    let bad = ReplyOptions {
        temperature: -1.0,
        ..ReplyOptions::default()
    };
    assert!(Reply::start(model.clone(), &messages, &bad).is_err());
    assert!(Reply::from_tokens(model, Vec::new(), &ReplyOptions::default()).is_err());
    assert!(ChatModel::from_gguf_bytes(b"GGUF but not really".to_vec()).is_err());
}
