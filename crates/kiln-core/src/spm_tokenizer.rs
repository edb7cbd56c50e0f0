//! SentencePiece-style tokenization as GGUF files describe it (`tokenizer.ggml.model = "llama"`:
//! Gemma, Llama 2, Mistral): spaces become `▁`, then adjacent pieces are merged, highest
//! vocabulary score first, while the merged text is a token; what remains unknown falls back to
//! `<0xXX>` byte tokens. Special tokens (control, user-defined and unknown types) are cut out of
//! the text first, longest first, as llama.cpp does.

use crate::error::{Error, Result};
use aho_corasick::AhoCorasick;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// ggml's token types.
pub(crate) mod token_type {
    /// An ordinary piece.
    pub const NORMAL: u64 = 1;
    /// The unknown token.
    pub const UNKNOWN: u64 = 2;
    /// A control token (`<bos>`, `<start_of_turn>`, ...).
    pub const CONTROL: u64 = 3;
    /// A user-defined token, matched literally in the text.
    pub const USER_DEFINED: u64 = 4;
    /// A byte-fallback token (`<0x0A>`).
    pub const BYTE: u64 = 6;
}

/// A SentencePiece vocabulary with scores, ready to tokenize.
pub struct SpmTokenizer {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<u64>,
    ids: HashMap<String, u32>,
    bytes: [Option<u32>; 256],
    specials: Vec<u32>,
    special_matcher: Option<AhoCorasick>,
    add_space_prefix: bool,
}

/// A part of the input: raw text (a byte range) or a special token found in it.
enum Fragment {
    Text(std::ops::Range<usize>),
    Special(u32),
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; on equal scores, the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A run of the text being merged: `[start, start + len)`, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl SpmTokenizer {
    /// Builds the tokenizer from the vocabulary's texts, scores and ggml token types.
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<u64>,
        add_space_prefix: bool,
    ) -> Result<Self> {
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} tokens but {} scores and {} token types",
                tokens.len(),
                scores.len(),
                types.len()
            )));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        let mut specials: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                matches!(
                    types[i as usize],
                    token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
                ) && !tokens[i as usize].is_empty()
            })
            .collect();
        // Longest first: a longer special token claims its text before a shorter one inside it.
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let special_matcher = if specials.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(specials.iter().map(|&i| &tokens[i as usize]))
                    .map_err(|e| Error::Tokenizer(format!("special tokens: {e}")))?,
            )
        };
        Ok(Self {
            tokens,
            scores,
            types,
            ids,
            bytes,
            specials,
            special_matcher,
            add_space_prefix,
        })
    }

    /// Splits `text` into raw text and special tokens.
    fn partition(&self, text: &str) -> Vec<Fragment> {
        let mut claimed: Vec<(usize, usize, u32)> = Vec::new();
        if let Some(matcher) = &self.special_matcher {
            // Every occurrence of every special token; then, longest token first and left to
            // right, an occurrence is taken when no taken one overlaps it.
            let mut found: Vec<(usize, usize, usize)> = matcher
                .find_overlapping_iter(text)
                .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
                .collect();
            found.sort_unstable();
            let mut taken: Vec<(usize, usize)> = Vec::new();
            for (rank, start, end) in found {
                if taken.iter().all(|&(s, e)| end <= s || start >= e) {
                    taken.push((start, end));
                    claimed.push((start, end, self.specials[rank]));
                }
            }
            claimed.sort_unstable();
        }
        let mut parts = Vec::new();
        let mut pos = 0;
        for (start, end, id) in claimed {
            if start > pos {
                parts.push(Fragment::Text(pos..start));
            }
            parts.push(Fragment::Special(id));
            pos = end;
        }
        if pos < text.len() {
            parts.push(Fragment::Text(pos..text.len()));
        }
        parts
    }

    /// Tokenizes `text`, turning special-token text into its token.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for part in self.partition(text) {
            match part {
                Fragment::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(range) => {
                    let mut piece = String::with_capacity(range.len() + 3);
                    if self.add_space_prefix && prev_special {
                        piece.push(' ');
                    }
                    piece.push_str(&text[range]);
                    let piece = piece.replace(' ', "\u{2581}");
                    self.encode_piece(&piece, &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Merges the characters of `text` (spaces already escaped) into tokens.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        let starts: Vec<(usize, usize)> = text
            .char_indices()
            .map(|(start, c)| (start, c.len_utf8()))
            .collect();
        let n = starts.len();
        let mut symbols: Vec<Symbol> = starts
            .iter()
            .enumerate()
            .map(|(i, &(start, len))| Symbol {
                start,
                len,
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut queue = BinaryHeap::new();
        // Only pairs whose joined text is a token are queued, so every symbol left at the end
        // is a token or a single character.
        let try_add = |symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>,
                       left: Option<usize>,
                       right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (symbols[left], symbols[right]);
            let piece = &text[l.start..r.start + r.len];
            if let Some(&id) = self.ids.get(piece) {
                queue.push(Bigram {
                    left,
                    right,
                    score: self.scores[id as usize],
                    size: piece.len(),
                });
            }
        };
        for i in 1..n {
            try_add(&symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Skip pairs whose symbols changed since the pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(b.left);
            }
            let left = symbols[b.left];
            try_add(&symbols, &mut queue, left.prev, Some(b.left));
            try_add(&symbols, &mut queue, Some(b.left), left.next);
        }
        let mut i = (n > 0).then_some(0);
        while let Some(k) = i {
            let Symbol { start, len, .. } = symbols[k];
            let piece = &text[start..start + len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                // A character outside the vocabulary becomes its UTF-8 bytes' tokens (dropped
                // when the vocabulary has no byte tokens, as llama.cpp does).
                None => out.extend(piece.bytes().filter_map(|b| self.bytes[b as usize])),
            }
            i = symbols[k].next;
        }
    }

    /// Turns ids back into text; with `skip_special`, control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(text) = self.tokens.get(id as usize) else {
                continue;
            };
            match self.types[id as usize] {
                token_type::BYTE => {
                    let hex = text.trim_start_matches("<0x").trim_end_matches('>');
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        bytes.push(b);
                    }
                }
                token_type::CONTROL | token_type::UNKNOWN if skip_special => {}
                token_type::CONTROL | token_type::UNKNOWN | token_type::USER_DEFINED => {
                    bytes.extend_from_slice(text.as_bytes())
                }
                _ => bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
