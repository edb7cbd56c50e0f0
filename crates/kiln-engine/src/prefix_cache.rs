//! Reuse of the KV cache of a shared prompt prefix: the caches of finished sequences are kept,
//! keyed by the tokens they hold, and a new prompt starts from a copy of the cache that shares
//! its longest prefix (a system prompt, the earlier turns of a chat) instead of prefilling it
//! again. The positions kept are bounded; the oldest entries go first.
//!
//! Reuse changes no result: every position's keys and values depend only on the tokens up to
//! it, so a prefix computed in an earlier request is the prefix this one would compute.

use kiln_core::models::llama::KvCache;

/// Shortest shared prefix worth copying a cache for.
pub const MIN_REUSE: usize = 8;

/// Finished sequences' caches, oldest first.
pub struct PrefixCache {
    entries: Vec<(Vec<u32>, KvCache)>,
    max_positions: usize,
}

impl PrefixCache {
    /// An empty cache keeping at most `max_positions` positions over all entries (0 disables it).
    pub fn new(max_positions: usize) -> Self {
        Self {
            entries: Vec::new(),
            max_positions,
        }
    }

    /// Positions held over all entries.
    pub fn positions(&self) -> usize {
        self.entries.iter().map(|(t, _)| t.len()).sum()
    }

    /// A copy of the cache sharing the longest prefix with `prompt`, cut to that prefix, and
    /// its length; at least one prompt token is always left to run (its logits are needed).
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<(usize, KvCache)> {
        let usable = prompt.len().saturating_sub(1);
        let (i, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (tokens, _))| {
                let common = tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common.min(usable))
            })
            .max_by_key(|&(i, n)| (n, i))?;
        if shared < MIN_REUSE {
            return None;
        }
        // The entry used last is kept longest.
        let entry = self.entries.remove(i);
        let mut copy = entry.1.clone();
        copy.truncate(shared);
        self.entries.push(entry);
        Some((shared, copy))
    }

    /// Keeps `cache`, which holds the positions of `tokens`.
    pub fn insert(&mut self, mut tokens: Vec<u32>, cache: KvCache) {
        tokens.truncate(cache.len());
        if tokens.len() < MIN_REUSE || tokens.len() > self.max_positions {
            return;
        }
        // An entry that is a prefix of the new one adds nothing.
        self.entries
            .retain(|(t, _)| !(t.len() <= tokens.len() && tokens[..t.len()] == t[..]));
        if self
            .entries
            .iter()
            .any(|(t, _)| t.len() >= tokens.len() && t[..tokens.len()] == tokens[..])
        {
            return;
        }
        self.entries.push((tokens, cache));
        while self.positions() > self.max_positions {
            self.entries.remove(0);
        }
    }
}
