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
    serde_json::from_value(tree).map_err(|e| Error::Tokenizer(e.to_string()))
}
