//! Incremental detokenization: the text that each newly generated token adds, without decoding
//! the whole generation again at every step (which made a long generation quadratic).
//!
//! The method of text-generation-inference: decode a short window of tokens twice, with and
//! without the new ones, and keep the difference. The window starts at the tokens that last
//! added text, so that whatever a decoder does at the start of a text (SentencePiece-style
//! decoders drop its first space) happens to both decodes alike. New tokens that add no text
//! yet (a skipped control token, or the first bytes of a multi-byte character, which decode
//! to U+FFFD) leave the window where it is until they do.

use crate::error::Result;
use crate::gguf_tokenizer::GgufTokenizer;

/// The text of a growing list of generated token ids, extended one step at a time.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    /// Where the decode window starts: the first token of the previous step's new text.
    prefix: usize,
    /// Tokens whose text is in `text`.
    read: usize,
    /// The text so far: complete characters only, until [`TextStream::finish`].
    text: String,
}

impl TextStream {
    /// A stream with no tokens yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text decoded so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends the text that `ids` (all tokens generated so far: those of earlier calls, then
    /// new ones) add to the earlier ones, control tokens left out. Text that ends in an
    /// incomplete character waits for the tokens that complete it.
    pub fn push(&mut self, tokenizer: &GgufTokenizer, ids: &[u32]) -> Result<()> {
        let Some((before, after)) = self.window(tokenizer, ids)? else {
            return Ok(());
        };
        // The window moves on only past tokens that added text: a window that began at a
        // token decoding to nothing (a skipped control token) would lose the space that some
        // decoders strip from the start of a text only.
        if after.len() <= before.len() || after.ends_with('\u{FFFD}') {
            return Ok(());
        }
        if let Some(new) = after.strip_prefix(before.as_str()) {
            self.take(new, ids.len());
        }
        Ok(())
    }

    /// Appends whatever `ids` still hold back at the end of a generation: an incomplete
    /// character becomes U+FFFD, as a decode of all the tokens gives it.
    pub fn finish(&mut self, tokenizer: &GgufTokenizer, ids: &[u32]) -> Result<()> {
        let Some((before, after)) = self.window(tokenizer, ids)? else {
            return Ok(());
        };
        // Decoders keep the text of earlier tokens as it was; one that did not would have
        // nothing appended rather than text already taken changed.
        let new = after.strip_prefix(before.as_str()).unwrap_or("");
        self.take(new, ids.len());
        Ok(())
    }

    /// The window's text without and with the tokens not yet read, or `None` when `ids`
    /// holds no new token.
    fn window(&self, tokenizer: &GgufTokenizer, ids: &[u32]) -> Result<Option<(String, String)>> {
        if ids.len() <= self.read {
            return Ok(None);
        }
        let before = tokenizer.decode(&ids[self.prefix..self.read], true)?;
        let after = tokenizer.decode(&ids[self.prefix..], true)?;
        Ok(Some((before, after)))
    }

    /// Appends `new`, the text of the tokens up to `read`, and starts the next window at the
    /// tokens that added it.
    fn take(&mut self, new: &str, read: usize) {
        self.text.push_str(new);
        self.prefix = self.read;
        self.read = read;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_id_sequences, stream_checked as stream};
    use std::path::Path;

    fn tiny() -> GgufTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama");
        GgufTokenizer::from_hf_dir(&dir).unwrap()
    }

    #[test]
    fn streamed_text_equals_the_whole_decode_and_only_grows() {
        let t = tiny();
        let text =
            "Hello, world! Ünïcödé café naïve — 日本語のテキスト 🎉🦀 and 12345 spaces  here.";
        let ids = t.encode(text, false).unwrap();
        assert!(ids.len() > 20, "{} ids", ids.len());
        let (streamed, steps) = stream(&t, &ids);
        assert_eq!(streamed, t.decode(&ids, true).unwrap());
        for w in steps.windows(2) {
            assert!(w[1].starts_with(&w[0]), "{:?} then {:?}", w[0], w[1]);
        }
        assert!(
            steps.iter().all(|s| !s.contains('\u{FFFD}')),
            "no partial character is ever shown"
        );
    }

    #[test]
    fn random_ids_stream_to_the_whole_decode() {
        let t = tiny();
        for ids in random_id_sequences(t.vocab_size() as u32, 200, 40) {
            let (streamed, _) = stream(&t, &ids);
            assert_eq!(streamed, t.decode(&ids, true).unwrap(), "ids {ids:?}");
        }
    }

    /// A word-level tokenizer whose decoder drops the first space of a text (Metaspace, as
    /// Llama 2 and Mistral tokenizer.json files have), with a control token `<s>`.
    fn metaspace() -> GgufTokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}",
                              "prepend_scheme": "always", "split": true},
            "post_processor": null,
            "decoder": {"type": "Metaspace", "replacement": "\u{2581}",
                        "prepend_scheme": "always", "split": true},
            "model": {"type": "WordLevel", "unk_token": "<s>",
                      "vocab": {"<s>": 0, "\u{2581}x": 1, "\u{2581}Hello": 2, "\u{2581}world": 3}}
        });
        let config = serde_json::json!({"bos_token": "<s>"});
        GgufTokenizer::from_hf_parts(
            json.to_string().as_bytes(),
            &config,
            &serde_json::Value::Null,
        )
        .unwrap()
    }

    #[test]
    fn a_skipped_control_token_keeps_the_following_space() {
        let t = metaspace();
        // x <s> Hello <s> <s> world: each word after a control token keeps its space.
        let ids = [1, 0, 2, 0, 0, 3];
        let whole = t.decode(&ids, true).unwrap();
        assert_eq!(whole, "x Hello world");
        let (streamed, steps) = stream(&t, &ids);
        assert_eq!(streamed, whole);
        assert_eq!(
            steps,
            ["x", "x", "x Hello", "x Hello", "x Hello", "x Hello world"]
        );
    }

    #[test]
    fn an_incomplete_character_waits_then_appears_whole() {
        let t = tiny();
        let ids = t.encode("a🦀b", false).unwrap();
        let (streamed, steps) = stream(&t, &ids);
        assert_eq!(streamed, t.decode(&ids, true).unwrap());
        assert!(steps.iter().any(|s| s.ends_with('🦀') || s.contains("🦀b")));
        assert!(steps.iter().all(|s| !s.contains('\u{FFFD}')));
        // Cut in the middle of the crab: nothing of it is shown until finish, then U+FFFD.
        let crab_done = (1..=ids.len())
            .find(|&n| t.decode(&ids[..n], true).unwrap().contains('🦀'))
            .unwrap();
        let mut s = TextStream::new();
        for n in 1..crab_done {
            s.push(&t, &ids[..n]).unwrap();
        }
        assert!(!s.text().contains('\u{FFFD}'), "{:?}", s.text());
        let partial = t.decode(&ids[..crab_done - 1], true).unwrap();
        assert!(
            partial.ends_with('\u{FFFD}'),
            "the crab spans tokens: {partial:?}"
        );
        s.finish(&t, &ids[..crab_done - 1]).unwrap();
        assert_eq!(s.text(), t.decode(&ids[..crab_done - 1], true).unwrap());
    }
}
