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
}

impl Sampler {
    /// A sampler for `params`, seeded from `params.seed` or the clock.
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(clock_seed);
        Self {
            params,
            state: seed,
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
        // Tokens more than 40 (after temperature) below the best have a probability below
        // e^-40 ≈ 4e-18 each, under 1e-12 together for any vocabulary: they are left out
        // before sorting, which spares sorting the whole vocabulary at every step.
        let best = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max)
            / p.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .filter(|&(_, l)| l > best - 40.0)
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            candidates.truncate(p.top_k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f64> = candidates
            .iter()
            .map(|c| ((c.1 - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&x| x >= floor).count().max(1));
        }
        let kept: f64 = probs[..keep].iter().sum();
        let mut r = self.uniform() * kept;
        for (i, pr) in probs[..keep].iter().enumerate() {
            r -= pr;
            if r <= 0.0 {
                return candidates[i].0;
            }
        }
        candidates[keep - 1].0
    }
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
