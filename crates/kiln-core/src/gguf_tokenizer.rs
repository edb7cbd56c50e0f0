//! The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata: byte-level BPE (`gpt2`
//! style: SmolLM2, Qwen2, Llama 3) rebuilt with the `tokenizers` crate, or SentencePiece
//! (`llama` style: Gemma) with [`SpmTokenizer`]; special tokens from the token types, and
//! BOS/EOS ids.

use crate::error::{Error, Result};
use crate::spm_tokenizer::{token_type, SpmTokenizer};
use crate::weights::gguf::{GgufFile, MetaValue};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

const TOKEN_TYPE_CONTROL: u64 = token_type::CONTROL;
const TOKEN_TYPE_USER_DEFINED: u64 = token_type::USER_DEFINED;

/// The two tokenization algorithms GGUF files use.
enum Inner {
    /// Byte-level BPE with merges (`tokenizer.ggml.model = "gpt2"`).
    Bpe(Box<Tokenizer>),
    /// SentencePiece pieces merged by score (`tokenizer.ggml.model = "llama"`).
    Spm(Box<SpmTokenizer>),
    /// A Hugging Face `tokenizer.json`, whose post-processor adds BOS where the model wants it.
    Hf(Box<Tokenizer>),
}

/// A GGUF model's tokenizer and its special tokens.
pub struct GgufTokenizer {
    inner: Inner,
    tokens: Vec<String>,
    /// Beginning-of-sequence token, if the model has one.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end generation: EOS, EOT and the other control tokens a chat model emits at a turn's end.
    pub stop_tokens: Vec<u32>,
}

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    f.meta(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| Error::weights(f.path(), format!("metadata `{key}` is missing")))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::weights(f.path(), format!("`{key}` holds a non-string")))
        })
        .collect()
}

fn token_id(f: &GgufFile, key: &str, vocab: usize) -> Option<u32> {
    f.meta(key)
        .and_then(MetaValue::as_u64)
        .filter(|&v| (v as usize) < vocab)
        .map(|v| v as u32)
}

/// The pre-tokenizer regex llama.cpp uses for `tokenizer.ggml.pre`, where it differs from GPT-2's.
fn pre_tokenizer_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "llama-bpe" | "llama3" | "qwen2" | "deepseek-r1-qwen" => Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        _ => None,
    }
}

impl GgufTokenizer {
    /// Builds the tokenizer from the file's metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f
            .meta("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| {
                Error::weights(f.path(), "metadata `tokenizer.ggml.model` is missing")
            })?;
        let tokens = strings(f, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = f
            .meta("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let inner = match model {
            "gpt2" => Inner::Bpe(Box::new(Self::bpe(f, &tokens, &types)?)),
            "llama" => Inner::Spm(Box::new(Self::spm(f, &tokens, &types)?)),
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: tokenizer model `{other}` (kiln reads `gpt2` byte-level BPE and `llama` SentencePiece)",
                    f.path().display()
                )))
            }
        };
        let n = tokens.len();
        let bos = token_id(f, "tokenizer.ggml.bos_token_id", n);
        let eos = token_id(f, "tokenizer.ggml.eos_token_id", n);
        let mut stop_tokens: Vec<u32> = [
            eos,
            token_id(f, "tokenizer.ggml.eot_token_id", n),
            token_id(f, "tokenizer.ggml.eom_token_id", n),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Chat models end a turn with these control tokens even when EOS is another token.
        for name in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"] {
            if let Some(i) = tokens.iter().position(|t| t == name) {
                if types.get(i) == Some(&TOKEN_TYPE_CONTROL) || types.is_empty() {
                    stop_tokens.push(i as u32);
                }
            }
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        Ok(Self {
            inner,
            bos,
            eos,
            // llama.cpp's default when the key is absent: SentencePiece models start with BOS.
            add_bos: f
                .meta("tokenizer.ggml.add_bos_token")
                .map_or(model == "llama", |v| matches!(v, MetaValue::Bool(true))),
            stop_tokens,
            tokens,
        })
    }

    /// Byte-level BPE from the vocabulary and `tokenizer.ggml.merges`.
    fn bpe(f: &GgufFile, tokens: &[String], types: &[u64]) -> Result<Tokenizer> {
        let merges: Vec<(String, String)> = strings(f, "tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(false)
            .build()
            .map_err(|e| {
                Error::Tokenizer(format!("building BPE from {}: {e}", f.path().display()))
            })?;
        let mut inner = Tokenizer::new(bpe);
        let pre = f
            .meta("tokenizer.ggml.pre")
            .and_then(MetaValue::as_str)
            .unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        match (pre, pre_tokenizer_regex(pre)) {
            (_, Some(regex)) => {
                let split = Split::new(
                    SplitPattern::Regex(regex.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
                inner.with_pre_tokenizer(Some(Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])));
            }
            // SmolLM's pre-tokenizer splits digits one by one, then applies GPT-2's.
            ("smollm", None) => {
                inner.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    byte_level.into(),
                ])));
            }
            _ => {
                inner.with_pre_tokenizer(Some(byte_level));
            }
        }
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .filter_map(|(i, &t)| {
                tokens
                    .get(i)
                    .map(|s| AddedToken::from(s.clone(), t == TOKEN_TYPE_CONTROL))
            })
            .collect();
        inner.add_special_tokens(&special);
        Ok(inner)
    }

    /// SentencePiece from the vocabulary, `tokenizer.ggml.scores` and the token types.
    fn spm(f: &GgufFile, tokens: &[String], types: &[u64]) -> Result<SpmTokenizer> {
        let scores: Vec<f32> = f
            .meta("tokenizer.ggml.scores")
            .and_then(MetaValue::as_array)
            .ok_or_else(|| Error::weights(f.path(), "metadata `tokenizer.ggml.scores` is missing"))?
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::weights(f.path(), "`tokenizer.ggml.scores` holds a non-number")
            })?;
        let types = if types.is_empty() {
            vec![token_type::NORMAL; tokens.len()]
        } else {
            types.to_vec()
        };
        let add_space_prefix = f
            .meta("tokenizer.ggml.add_space_prefix")
            .is_none_or(|v| matches!(v, MetaValue::Bool(true)));
        SpmTokenizer::new(tokens.to_vec(), scores, types, add_space_prefix)
    }

    /// Builds the tokenizer of a Hugging Face model directory: `tokenizer.json`, with BOS/EOS
    /// from `tokenizer_config.json`, and stop tokens from EOS, `generation_config.json`'s
    /// `eos_token_id` and the usual end-of-turn tokens.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let json = std::fs::read(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(text) => serde_json::from_str(&text)
                    .map_err(|e| Error::weights(&p, format!("invalid JSON: {e}"))),
                Err(_) => Ok(serde_json::Value::Null),
            }
        };
        let config = read_json("tokenizer_config.json")?;
        let generation = read_json("generation_config.json")?;
        Self::from_hf_parts(&json, &config, &generation).map_err(|e| match e {
            Error::Tokenizer(m) => Error::Tokenizer(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Builds a Hugging Face tokenizer from the bytes of `tokenizer.json` and the parsed
    /// `tokenizer_config.json` and `generation_config.json` (`Null` when absent).
    pub fn from_hf_parts(
        tokenizer_json: &[u8],
        config: &serde_json::Value,
        generation: &serde_json::Value,
    ) -> Result<Self> {
        let inner = crate::tokenize::tokenizer_from_json(tokenizer_json)?;
        let n = inner.get_vocab_size(true);
        let mut tokens = vec![String::new(); n];
        for (t, id) in inner.get_vocab(true) {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = t;
            }
        }
        let special = |key: &str| -> Option<u32> {
            let v = &config[key];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            inner.token_to_id(text)
        };
        let (bos, eos) = (special("bos_token"), special("eos_token"));
        let mut stop_tokens: Vec<u32> = eos.into_iter().collect();
        match &generation["eos_token_id"] {
            serde_json::Value::Number(x) => stop_tokens.extend(x.as_u64().map(|v| v as u32)),
            serde_json::Value::Array(a) => {
                stop_tokens.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
            }
            _ => {}
        }
        for name in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"] {
            stop_tokens.extend(inner.token_to_id(name));
        }
        stop_tokens.retain(|&t| (t as usize) < n);
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        Ok(Self {
            inner: Inner::Hf(Box::new(inner)),
            tokens,
            bos,
            eos,
            // The post-processor of tokenizer.json decides; prompts ask it to add specials.
            add_bos: true,
            stop_tokens,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The text of token `id` as stored (byte-level encoded), if it exists.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Tokenizes `text`; special-token text such as `<|im_start|>` becomes its token.
    /// With `add_bos`, BOS is prepended when the model asks for it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        match &self.inner {
            Inner::Bpe(t) => {
                let enc = t
                    .encode_fast(text, false)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Inner::Spm(t) => ids.extend(t.encode(text)),
            Inner::Hf(t) => {
                ids.clear();
                let enc = t
                    .encode_fast(text, add_bos)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                ids.extend_from_slice(enc.get_ids());
            }
        }
        Ok(ids)
    }

    /// Turns ids back into text; with `skip_special`, control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner {
            Inner::Bpe(t) => t
                .decode(ids, skip_special)
                .map_err(|e| Error::Tokenizer(e.to_string())),
            Inner::Spm(t) => Ok(t.decode(ids, skip_special)),
            Inner::Hf(t) => t
                .decode(ids, skip_special)
                .map_err(|e| Error::Tokenizer(e.to_string())),
        }
    }

    /// Whether `id` ends generation.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_tokens.binary_search(&id).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_parts_build_the_same_tokenizer_as_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama");
        let from_dir = GgufTokenizer::from_hf_dir(&dir).unwrap();
        let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let read = |n: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap()
        };
        let (config, generation) = (
            read("tokenizer_config.json"),
            read("generation_config.json"),
        );
        let from_parts = GgufTokenizer::from_hf_parts(&json, &config, &generation).unwrap();
        assert_eq!(
            (from_parts.bos, from_parts.eos, &from_parts.stop_tokens),
            (from_dir.bos, from_dir.eos, &from_dir.stop_tokens)
        );
        let text = "Hello world, 12345!";
        assert_eq!(
            from_parts.encode(text, true).unwrap(),
            from_dir.encode(text, true).unwrap()
        );
        let null = serde_json::Value::Null;
        match GgufTokenizer::from_hf_parts(b"{not json", &null, &null) {
            Err(Error::Tokenizer(m)) => assert!(m.contains("key must be a string"), "{m}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("broken JSON loaded"),
        }
    }
}
