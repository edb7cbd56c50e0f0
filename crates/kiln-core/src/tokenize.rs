//! Text to token ids, with the truncation rules of the model.

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A tokenizer configured for one model: no padding, truncation at the model's maximum length.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without truncation, to report the full length of rejected inputs.
    untruncated: Tokenizer,
    max_len: usize,
    lowercase: bool,
}

/// One tokenized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// Token ids including special tokens.
    pub ids: Vec<u32>,
    /// Whether tokens were cut off to fit the maximum length.
    pub truncated: bool,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and sets truncation to `max_len` tokens (special tokens included).
    pub fn from_file(path: &Path, max_len: usize, lowercase: bool) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, max_len, lowercase).map_err(|e| Error::config(path, e.to_string()))
    }

    /// Builds the tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8], max_len: usize, lowercase: bool) -> Result<Self> {
        let mut inner = tokenizer_from_json(bytes)?;
        inner.with_padding(None);
        let mut untruncated = inner.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self {
            inner,
            untruncated,
            max_len,
            lowercase,
        })
    }

    /// The maximum number of tokens per input.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenizes one text as sentence-transformers does: whitespace stripped, special tokens added.
    ///
    /// With `truncate` off, an input longer than the maximum is an [`Error::InputTooLong`].
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Tokenized> {
        let text = text.trim();
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let truncated = !enc.get_overflowing().is_empty();
        if truncated && !truncate {
            let full = self
                .untruncated
                .encode_fast(text, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            return Err(Error::InputTooLong {
                index: 0,
                tokens: full.len(),
                max: self.max_len,
            });
        }
        Ok(Tokenized {
            ids: enc.get_ids().to_vec(),
            truncated,
        })
    }
}

/// Parses a `tokenizer.json` into a [`Tokenizer`].
///
/// The JSON is parsed into a tree first and the tokenizer built from the tree: the
/// `tokenizers` crate panics (`expect("Helper")`) on a JSON syntax error inside `"decoder"`
/// when it parses text itself (found by fuzzing), and a tree holds no syntax errors.
pub fn tokenizer_from_json(bytes: &[u8]) -> Result<Tokenizer> {
    let tree: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not valid JSON: {e}")))?;
    check_post_processor(&tree["post_processor"])
        .map_err(|m| Error::Tokenizer(format!("tokenizer.json: post_processor: {m}")))?;
    serde_json::from_value(tree).map_err(|e| Error::Tokenizer(e.to_string()))
}

/// Checks what the `tokenizers` crate's `TemplateProcessing` builder checks but its
/// deserializer does not, and what it then indexes without checking (found by fuzzing):
/// every special token a template names exists, with as many ids as tokens; the single
/// template uses sequence A only; the pair template uses both A and B.
fn check_post_processor(v: &serde_json::Value) -> std::result::Result<(), String> {
    match v["type"].as_str() {
        Some("Sequence") => {
            for p in v["processors"].as_array().into_iter().flatten() {
                check_post_processor(p)?;
            }
            Ok(())
        }
        Some("TemplateProcessing") => {
            let specials = v["special_tokens"].as_object();
            for (key, t) in specials.into_iter().flatten() {
                let (ids, tokens) = (t["ids"].as_array(), t["tokens"].as_array());
                if ids.map(Vec::len) != tokens.map(Vec::len) {
                    return Err(format!(
                        "special token `{key}` has a different number of ids and tokens"
                    ));
                }
            }
            for (name, allowed) in [("single", &["A"][..]), ("pair", &["A", "B"][..])] {
                let mut used = Vec::new();
                for piece in v[name].as_array().into_iter().flatten() {
                    if let Some(id) = piece["SpecialToken"]["id"].as_str() {
                        if !specials.is_some_and(|m| m.contains_key(id)) {
                            return Err(format!(
                                "the {name} template names special token `{id}`, which is not in special_tokens"
                            ));
                        }
                    }
                    if let Some(id) = piece["Sequence"]["id"].as_str() {
                        if !allowed.contains(&id) {
                            return Err(format!("the {name} template uses sequence {id}"));
                        }
                        used.push(id);
                    }
                }
                if name == "pair"
                    && v[name].is_array()
                    && !(used.contains(&"A") && used.contains(&"B"))
                {
                    return Err("the pair template does not use both sequences".into());
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
