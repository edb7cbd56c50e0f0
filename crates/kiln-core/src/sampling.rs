//! Choosing the next token from logits: penalties, temperature, top-k, top-p, min-p, and a
//! seeded generator so that the same seed gives the same output.

use serde::{Deserialize, Serialize};

/// Sampling settings of one request (OpenAI's names where they exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy); higher flattens the distribution.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability sums to at least this.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit for each time it was already generated.
    pub frequency_penalty: f32,
    /// Divides positive (multiplies negative) logits of tokens already seen; 1 is off.
    pub repetition_penalty: f32,
    /// Seed of the random generator; `None` picks one from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every value is in its range; the error names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |v: f32| v.is_finite();
        if !finite(self.temperature) || !(0.0..=2.0).contains(&self.temperature) {
            return Err(format!(
                "temperature must be between 0 and 2, got {}",
                self.temperature
            ));
        }
        if !finite(self.top_p) || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !finite(self.min_p) || !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be between 0 and 1, got {}", self.min_p));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !finite(v) || !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} must be between -2 and 2, got {v}"));
            }
        }
        if !finite(self.repetition_penalty) || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty must be positive, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// A seed from the clock.
#[cfg(not(target_arch = "wasm32"))]
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64)
}

/// wasm32-unknown-unknown has no clock in `std` (`SystemTime::now` panics there): a counter
/// keeps successive samplers apart; callers that want fresh randomness pass a seed.
#[cfg(target_arch = "wasm32")]
fn clock_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0x5EED);
    NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

/// A sampler with its own random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    state: u64,
    weights: Weights,
}

/// A sampler's buffer of token weights, kept between calls (a vocabulary's worth: allocated
/// afresh, its pages were faulted in at every token).
#[derive(Clone, Default)]
struct Weights(Vec<f32>);

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weights({} tokens)", self.0.len())
    }
}

impl Sampler {
    /// A sampler for `params`, seeded from `params.seed` or the clock.
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(clock_seed);
        Self {
            params,
            state: seed,
            weights: Weights::default(),
        }
    }

    /// A uniform number in [0, 1) (SplitMix64).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token; `history` is what was generated so far (penalties apply to it).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        // The logits are copied only when penalties change them.
        let penalized;
        let logits = if p.presence_penalty != 0.0
            || p.frequency_penalty != 0.0
            || p.repetition_penalty != 1.0
        {
            let mut logits = logits.to_vec();
            let mut counts = std::collections::HashMap::new();
            for &t in history {
                *counts.entry(t as usize).or_insert(0u32) += 1;
            }
            for (t, n) in counts {
                let Some(l) = logits.get_mut(t) else { continue };
                if p.repetition_penalty != 1.0 {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
            penalized = logits;
            &penalized[..]
        } else {
            logits
        };
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let weights = &mut self.weights.0;
        let total = kiln_kernels::sampling::token_weights(logits, p.temperature, CUT, weights);
        if total <= 0.0 || !total.is_finite() {
            return argmax(logits);
        }
        let top_k = (p.top_k > 0).then_some(p.top_k);
        let kept = if top_k.is_none() && p.top_p >= 1.0 && p.min_p <= 0.0 {
            None
        } else {
            Some(kept(weights, total, top_k, p.top_p, p.min_p))
        };
        let r = self.uniform();
        let weights = &self.weights.0;
        match kept {
            // Nothing is cut: every candidate, in vocabulary order.
            None => kiln_kernels::sampling::draw(weights, r * total)
                .or_else(|| weights.iter().rposition(|&w| w > 0.0))
                .map_or_else(|| argmax(logits), |i| i as u32),
            Some(kept) => {
                let mass: f64 = kept.iter().map(|c| c.1 as f64).sum();
                let mut left = r * mass;
                for &(i, w) in &kept {
                    left -= w as f64;
                    if left <= 0.0 {
                        return i;
                    }
                }
                kept.last().map_or_else(|| argmax(logits), |c| c.0)
            }
        }
    }
}

/// This far or farther below the best scaled logit, a token is left out: its probability is
/// at most e^-40 ≈ 4e-18, under 1e-12 for all of any vocabulary together.
const CUT: f32 = 40.0;

/// The tokens a draw picks from, most likely first (ties by token id), with their weights:
/// the `top_k` heaviest if set, then the fewest whose probability sums to `top_p`, at most
/// those of at least `min_p` times the best's (never none).
///
/// Only the head of the distribution is sorted: a search over [`floors`] finds the lightest
/// weight a kept token can have (the heaviest floor above which `top_k` tokens, or `top_p` of
/// the total, lie), one vectorized pass per probe
/// ([`kiln_kernels::sampling::at_or_above`]), and only the tokens at or
/// above it are sorted. Sorting every candidate cost 0.9-1.2 ms per token for SmolLM2's
/// 49,152 and 5.3-7.6 ms for Gemma 3's 262,144 (`cargo bench -p kiln-core --bench sampling`).
fn kept(
    weights: &[f32],
    total: f64,
    top_k: Option<usize>,
    top_p: f32,
    min_p: f32,
) -> Vec<(u32, f32)> {
    let heavier = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let sorted_above = |floor: f32| -> Vec<(u32, f32)> {
        let mut head: Vec<(u32, f32)> = weights
            .iter()
            .enumerate()
            .filter(|(_, &w)| w > 0.0 && w >= floor)
            .map(|(i, &w)| (i as u32, w))
            .collect();
        head.sort_unstable_by(heavier);
        head
    };
    let mut total = total;
    let mut min_p_head = false;
    let mut head = match top_k {
        Some(k) => {
            // The k heaviest, and the total theirs.
            let mut head = sorted_above(heaviest_floor(weights, |n, _| n >= k));
            head.truncate(k);
            total = head.iter().map(|c| c.1 as f64).sum();
            head
        }
        None => {
            let mut floor = 0.0f32;
            if top_p < 1.0 {
                let need = top_p as f64 * total;
                floor = heaviest_floor(weights, |_, mass| mass >= need);
            }
            // Min-p's floor is the heavier: the head is every token min-p keeps (the best
            // weighs exactly 1), so top-p reaching past it cuts nothing more.
            if min_p > 0.0 && min_p >= floor {
                floor = min_p;
                min_p_head = true;
            }
            sorted_above(floor)
        }
    };
    let cut = |head: &[(u32, f32)], whole: bool| -> Option<usize> {
        let mut keep = head.len();
        if top_p < 1.0 {
            let need = top_p as f64 * total;
            let mut sum = 0.0;
            let reached = head.iter().position(|c| {
                sum += c.1 as f64;
                sum >= need
            });
            match reached {
                Some(i) => keep = i + 1,
                None if whole => {}
                None => return None,
            }
        }
        if min_p > 0.0 {
            let best = head.first().map_or(0.0, |c| c.1);
            let above = head.iter().take_while(|c| c.1 >= best * min_p).count();
            keep = keep.min(above.max(1));
        }
        Some(keep)
    };
    // The head is all there is to keep with top-k (the k heaviest) or min-p's floor.
    let keep = match cut(&head, top_k.is_some() || min_p_head) {
        Some(keep) => keep,
        None => {
            // The search's sum and the sorted one round apart at the very edge: every
            // candidate.
            head = sorted_above(0.0);
            cut(&head, true).unwrap_or(head.len())
        }
    };
    head.truncate(keep.max(1));
    head
}

/// Floors to search, heaviest first: 8 per power of 2, from 1.875 (above the best token's
/// weight, 1) down to 2^-63, below the lightest weight a candidate can have (e^-40).
fn floors() -> impl Iterator<Item = f32> {
    (0..64u32 * 8).map(|b| f32::from_bits(((127 - b / 8) << 23) | ((7 - b % 8) << 20)))
}

/// The heaviest of [`floors`] at or above which the weights satisfy `enough(count, sum)` (a
/// condition that only more weights can meet), 0 if none does: a binary search, one pass over
/// the weights per probe.
fn heaviest_floor(weights: &[f32], enough: impl Fn(usize, f64) -> bool) -> f32 {
    let floors: Vec<f32> = floors().collect();
    let meets = |f: f32| {
        let (n, mass) = kiln_kernels::sampling::at_or_above(weights, f);
        enough(n, mass)
    };
    // The first floor (heaviest first) that meets it: every lighter one does too.
    let first = floors.partition_point(|&f| !meets(f));
    floors.get(first).copied().unwrap_or(0.0)
}

/// The total order of `f32` ([`f32::total_cmp`]) as an `i32` order: negative values have their
/// other bits flipped.
#[inline(always)]
fn order_key(v: f32) -> i32 {
    let b = v.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

/// The first index of the largest logit in the total order of `f32` (as llama.cpp's greedy
/// sampler picks, the first of equal maxima); 0 for no logits. One pass in 16 lanes, each
/// keeping its first maximum, written so that it vectorizes: a vocabulary of 262,144 logits
/// per sequence and step made the plain `max_by` 4% of Gemma 3's batched decoding.
pub fn argmax(logits: &[f32]) -> u32 {
    const LANES: usize = 16;
    let (mut best, mut at) = ([i32::MIN; LANES], [0u32; LANES]);
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        for i in 0..LANES {
            let k = order_key(chunk[i]);
            if k > best[i] {
                best[i] = k;
                at[i] = (c * LANES + i) as u32;
            }
        }
    }
    let (mut key, mut index) = (i32::MIN, 0u32);
    for i in 0..LANES {
        if best[i] > key || (best[i] == key && at[i] < index) {
            (key, index) = (best[i], at[i]);
        }
    }
    let start = logits.len() - rest.len();
    for (i, &v) in rest.iter().enumerate() {
        if order_key(v) > key {
            (key, index) = (order_key(v), (start + i) as u32);
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_argmax() {
        assert_eq!(
            Sampler::new(SamplingParams::greedy()).sample(&logits(), &[]),
            1
        );
    }

    /// The vectorized argmax against the plain one: first index of the maximum in `total_cmp`
    /// order, over lengths 0 to 70, with ties, signed zeros, infinities and NaNs.
    #[test]
    fn argmax_is_the_first_maximum_in_total_order() {
        let values = [
            0.0,
            -0.0,
            1.5,
            -1.5,
            3.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            1e-40,
        ];
        let mut state = 7u32;
        for len in 0..70 {
            for round in 0..50 {
                let l: Vec<f32> = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        // Most rounds draw from a few values only (many ties); some from all.
                        values[(state >> 16) as usize % if round % 3 == 0 { 10 } else { 4 }]
                    })
                    .collect();
                let want = l
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                    .map_or(0, |(i, _)| i as u32);
                assert_eq!(argmax(&l), want, "{l:?}");
            }
        }
    }

    #[test]
    fn same_seed_same_tokens_and_different_seeds_differ() {
        let params = |seed| SamplingParams {
            temperature: 1.5,
            seed: Some(seed),
            ..Default::default()
        };
        let run = |seed| {
            let mut s = Sampler::new(params(seed));
            (0..64)
                .map(|_| s.sample(&logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        for p in [
            SamplingParams {
                top_k: 1,
                seed: Some(1),
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.01,
                seed: Some(1),
                ..Default::default()
            },
            SamplingParams {
                min_p: 0.99,
                seed: Some(1),
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(p);
            assert!((0..50).all(|_| s.sample(&logits(), &[]) == 1));
        }
    }

    /// The kept set as a full sort gives it: every candidate heaviest first (ties by id), the
    /// top k, then the top-p prefix, then min-p.
    fn kept_by_full_sort(
        weights: &[f32],
        total: f64,
        top_k: Option<usize>,
        top_p: f32,
        min_p: f32,
    ) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = weights
            .iter()
            .enumerate()
            .filter(|(_, &w)| w > 0.0)
            .map(|(i, &w)| (i as u32, w))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut total = total;
        if let Some(k) = top_k {
            all.truncate(k);
            total = all.iter().map(|c| c.1 as f64).sum();
        }
        let mut keep = all.len();
        if top_p < 1.0 {
            let mut sum = 0.0;
            for (i, c) in all.iter().enumerate() {
                sum += c.1 as f64;
                if sum >= top_p as f64 * total {
                    keep = i + 1;
                    break;
                }
            }
        }
        if min_p > 0.0 {
            let above = all.iter().take_while(|c| c.1 >= all[0].1 * min_p).count();
            keep = keep.min(above.max(1));
        }
        all.truncate(keep.max(1));
        all
    }

    /// The head-only search keeps exactly the tokens a full sort keeps, in the same order:
    /// flat and peaked logits, ties, masked tokens, every cut alone and together.
    #[test]
    fn kept_tokens_are_those_of_a_full_sort() {
        let mut state = 0x9e37_79b9u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for round in 0..60 {
            let n = [5, 64, 1000, 5000][round % 4];
            let spread = [0.5f32, 3.0, 12.0][round % 3];
            let logits: Vec<f32> = (0..n)
                .map(|i| match next() % 50 {
                    0 => f32::NEG_INFINITY,
                    // Ties: a few values repeat.
                    1..=5 => (i % 3) as f32,
                    _ => (next() % 10_000) as f32 / 10_000.0 * spread * 4.0 - spread * 2.0,
                })
                .collect();
            for temperature in [0.3f32, 0.7, 1.0, 1.7] {
                let mut weights = Vec::new();
                let total =
                    kiln_kernels::sampling::token_weights(&logits, temperature, CUT, &mut weights);
                for (top_k, top_p, min_p) in [
                    (None, 0.9, 0.0),
                    (None, 0.5, 0.0),
                    (None, 0.999, 0.0),
                    (None, 1.0, 0.05),
                    (None, 0.8, 0.1),
                    (Some(1), 1.0, 0.0),
                    (Some(40), 1.0, 0.0),
                    (Some(40), 0.9, 0.02),
                    (Some(n + 5), 0.95, 0.0),
                ] {
                    let got = kept(&weights, total, top_k, top_p, min_p);
                    let want = kept_by_full_sort(&weights, total, top_k, top_p, min_p);
                    assert_eq!(
                        got, want,
                        "n {n}, t {temperature}, {top_k:?} {top_p} {min_p}"
                    );
                }
            }
        }
    }

    /// Draws follow the distribution: with nothing cut, each of 6 tokens comes up in
    /// proportion to `e^(l / t)` (within 5 standard deviations over 60,000 draws), and top-p
    /// draws only from its prefix of the tempered probabilities, in proportion within it.
    #[test]
    fn draws_follow_the_probabilities() {
        let logits = [2.0f32, 0.0, 1.0, f32::NEG_INFINITY, 1.5, -1.0];
        let t = 0.8f32;
        let p: Vec<f64> = logits.iter().map(|&l| ((l / t) as f64).exp()).collect();
        let z: f64 = p.iter().sum();
        // Top-p 0.75 tells the order apart: on the tempered probabilities (0.519, 0.278, ...)
        // tokens 0 and 4 reach it; on the untempered ones (0.463, 0.281, ...) token 2 would too.
        for (top_p, support) in [
            (1.0f32, vec![0, 1, 2, 4, 5]),
            (0.8, vec![0, 4, 2]),
            (0.75, vec![0, 4]),
        ] {
            let mut s = Sampler::new(SamplingParams {
                temperature: t,
                top_p,
                seed: Some(11),
                ..Default::default()
            });
            let draws = 60_000;
            let mut seen = [0usize; 6];
            for _ in 0..draws {
                seen[s.sample(&logits, &[]) as usize] += 1;
            }
            let mass: f64 = support.iter().map(|&i| p[i] / z).sum();
            for i in 0..6 {
                let want = if support.contains(&i) {
                    p[i] / z / mass
                } else {
                    0.0
                };
                let got = seen[i] as f64 / draws as f64;
                let sd = (want * (1.0 - want) / draws as f64).sqrt();
                assert!(
                    (got - want).abs() <= 5.0 * sd + 1e-12,
                    "top_p {top_p}, token {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn top_k_restricts_the_candidates() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 2,
            temperature: 2.0,
            seed: Some(3),
            ..Default::default()
        });
        let seen: std::collections::HashSet<u32> =
            (0..500).map(|_| s.sample(&logits(), &[])).collect();
        assert_eq!(seen, [1, 4].into_iter().collect());
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let history = [1, 1, 1];
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 1.0,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&logits(), &history), 4);
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.2,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&logits(), &[1]), 4);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&logits(), &[1]), 4);
    }

    #[test]
    fn out_of_range_parameters_are_named() {
        let bad = SamplingParams {
            temperature: 3.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("temperature"));
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("top_p"));
        assert!(SamplingParams::default().validate().is_ok());
    }
}
