//! Reuse of the KV cache of a shared prompt prefix: the caches of finished sequences are kept,
//! keyed by the tokens they hold, and a new prompt starts from a copy of the cache that shares
//! its longest prefix (a system prompt, the earlier turns of a chat) instead of prefilling it
//! again. The positions kept are bounded; the entries used longest ago go first, and an entry
//! unused for the time-to-live is dropped, so an idle server gives its memory back.
//!
//! Reuse changes no result: every position's keys and values depend only on the tokens up to
//! it, so a prefix computed in an earlier request is the prefix this one would compute.

use kiln_core::models::llama::KvCache;
use std::time::{Duration, Instant};

/// Shortest shared prefix worth copying a cache for.
pub const MIN_REUSE: usize = 8;

/// Finished sequences' caches, the one used longest ago first.
pub struct PrefixCache {
    entries: Vec<Entry>,
    max_positions: usize,
    ttl: Option<Duration>,
}

/// One kept cache and the tokens whose positions it holds.
struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    last_used: Instant,
}

impl PrefixCache {
    /// An empty cache keeping at most `max_positions` positions over all entries (0 disables
    /// it), each for at most `ttl` after its last use (for ever, if `None`).
    pub fn new(max_positions: usize, ttl: Option<Duration>) -> Self {
        Self {
            entries: Vec::new(),
            max_positions,
            ttl,
        }
    }

    /// Positions held over all entries.
    pub fn positions(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    /// When the entry used longest ago expires, if any entry can.
    pub fn next_expiry(&self) -> Option<Instant> {
        Some(self.entries.first()?.last_used + self.ttl?)
    }

    /// Drops the entries unused for the time-to-live by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let Some(ttl) = self.ttl else { return 0 };
        let before = self.entries.len();
        self.entries.retain(|e| now < e.last_used + ttl);
        before - self.entries.len()
    }

    /// A copy of the cache sharing the longest prefix with `prompt`, cut to that prefix, and
    /// its length; at least one prompt token is always left to run (its logits are needed).
    pub fn lookup(&mut self, prompt: &[u32], now: Instant) -> Option<(usize, KvCache)> {
        let usable = prompt.len().saturating_sub(1);
        let (i, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
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
        let mut entry = self.entries.remove(i);
        let mut copy = entry.cache.clone();
        copy.truncate(shared);
        entry.last_used = now;
        self.entries.push(entry);
        Some((shared, copy))
    }

    /// Keeps `cache`, which holds the positions of `tokens`; returns the caches let go: this
    /// one if not kept (too short or too long to keep, or already held by a longer entry), and
    /// entries it replaced or pushed out.
    #[must_use = "a cache let go can serve a new sequence"]
    pub fn insert(&mut self, mut tokens: Vec<u32>, cache: KvCache, now: Instant) -> Vec<KvCache> {
        tokens.truncate(cache.len());
        if tokens.len() < MIN_REUSE || tokens.len() > self.max_positions {
            return vec![cache];
        }
        // An entry that is a prefix of the new one adds nothing.
        let (dropped, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| {
                e.tokens.len() <= tokens.len() && tokens[..e.tokens.len()] == e.tokens[..]
            });
        self.entries = kept;
        let mut let_go: Vec<KvCache> = dropped.into_iter().map(|e| e.cache).collect();
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.tokens.len() >= tokens.len() && e.tokens[..tokens.len()] == tokens[..])
        {
            // Already held by a longer entry, which was just used.
            let mut entry = self.entries.remove(i);
            entry.last_used = now;
            self.entries.push(entry);
            let_go.push(cache);
            return let_go;
        }
        self.entries.push(Entry {
            tokens,
            cache,
            last_used: now,
        });
        while self.positions() > self.max_positions {
            let_go.push(self.entries.remove(0).cache);
        }
        let_go
    }
}
