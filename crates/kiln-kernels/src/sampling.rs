//! The passes of drawing a token over a whole vocabulary: each token's weight
//! `e^(l / temperature - best)`, the count and sum of the weights above a floor (where top-k
//! and top-p cut), and the draw of an index from the weights. All three are plain
//! loops compiled for the best instruction set of the CPU (`multiversion!`); no
//! multiply and add is fused, so the weights are the same bits everywhere (a seed picks the same
//! tokens on every machine and in the browser).

/// Lanes of the vectorized loops (one AVX-512 register of `f32`).
const LANES: usize = 16;

/// Weights summed per step of [`draw`]'s walk.
const DRAW_CHUNK: usize = 64;

crate::cpu::multiversion! {
    /// Writes each token's weight `e^(l / temperature - best)` into `weights` (`best` the
    /// largest finite `l / temperature`, whose weight is 1): 0 for a non-finite logit and for
    /// a token `cut` or more below the best. Returns the weights' sum in `f64`, 0 when no logit
    /// is finite. `temperature` must be positive.
    pub fn token_weights(logits: &[f32], temperature: f32, cut: f32, weights: &mut Vec<f32>) -> f64 {
        let mut top = [f32::NEG_INFINITY; LANES];
        let chunks = logits.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (t, &l) in top.iter_mut().zip(c) {
                // A NaN fails the comparison; infinities are not finite.
                *t = if l.is_finite() && l > *t { l } else { *t };
            }
        }
        let best = rest
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .chain(top)
            .fold(f32::NEG_INFINITY, f32::max);
        weights.clear();
        if best == f32::NEG_INFINITY {
            return 0.0;
        }
        let best = best / temperature;
        // Plain loops: an iterator adaptor here was left a call, compiled without the
        // instruction set of this function (perf: 4 lanes instead of 16).
        weights.resize(logits.len(), 0.0);
        for (w, &l) in weights.iter_mut().zip(logits) {
            let x = l / temperature - best;
            let e = crate::activation::exp(x.max(-cut));
            *w = if l.is_finite() && x > -cut { e } else { 0.0 };
        }
        let mut lanes = [0.0f64; LANES];
        let chunks = weights.chunks_exact(LANES);
        let mut total: f64 = chunks.remainder().iter().map(|&w| w as f64).sum();
        for c in chunks {
            for (s, &w) in lanes.iter_mut().zip(c) {
                *s += w as f64;
            }
        }
        for s in lanes {
            total += s;
        }
        total
    }
}

crate::cpu::multiversion! {
    /// The first index at which the running sum of `weights` (in index order) reaches `r`, or
    /// `None` if the sum stays below it. The walk takes the weights 64 at a time:
    /// a chunk's sum (its weights in `f64`, in order) is subtracted whole while it stays
    /// below what is left, then the chunk that reaches it is walked weight by weight.
    pub fn draw(weights: &[f32], r: f64) -> Option<usize> {
        let mut left = r;
        for (c, chunk) in weights.chunks(DRAW_CHUNK).enumerate() {
            let mut sum = 0.0f64;
            for &w in chunk {
                sum += w as f64;
            }
            if sum < left {
                left -= sum;
                continue;
            }
            for (i, &w) in chunk.iter().enumerate() {
                left -= w as f64;
                if left <= 0.0 && w > 0.0 {
                    return Some(c * DRAW_CHUNK + i);
                }
            }
        }
        None
    }
}

crate::cpu::multiversion! {
    /// How many of `weights` are at or above `floor`, and their sum in `f64` (16 lanes, then
    /// the lanes in order).
    pub fn at_or_above(weights: &[f32], floor: f32) -> (usize, f64) {
        let mut mass = [0.0f64; LANES];
        let mut count = [0u32; LANES];
        let chunks = weights.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                let keep = c[j] >= floor;
                mass[j] += if keep { c[j] as f64 } else { 0.0 };
                count[j] += keep as u32;
            }
        }
        let mut total = 0.0f64;
        let mut n = 0usize;
        for j in 0..LANES {
            total += mass[j];
            n += count[j] as usize;
        }
        for &w in rest {
            if w >= floor {
                total += w as f64;
                n += 1;
            }
        }
        (n, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits over a range of 60 with every kind of special value among them.
    fn logits(n: usize) -> Vec<f32> {
        let mut s = 0x1234_5678u32;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                match i % 97 {
                    3 => f32::NAN,
                    5 => f32::NEG_INFINITY,
                    7 => f32::INFINITY,
                    _ => (s % 60_000) as f32 / 1000.0 - 30.0,
                }
            })
            .collect()
    }

    /// The weights against a plain `f64` computation: the same zeros, values within the
    /// exponential's error, and the sum.
    #[test]
    fn weights_match_plain_exponentials() {
        for n in [0, 1, 15, 16, 17, 100, 1000, 49_152] {
            for t in [0.3f32, 0.7, 1.0, 2.0] {
                let l = logits(n);
                let mut w = Vec::new();
                let total = token_weights(&l, t, 40.0, &mut w);
                assert_eq!(w.len(), n);
                let best = l
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut want_total = 0.0;
                for (i, (&l, &w)) in l.iter().zip(&w).enumerate() {
                    let x = l / t - best / t;
                    if !l.is_finite() || x <= -40.0 {
                        assert_eq!(w, 0.0, "{n} {t} {i}");
                        continue;
                    }
                    let want = (x as f64).exp();
                    assert!(
                        (w as f64 - want).abs() <= want * 1e-6,
                        "{n} {t} {i}: {w} {want}"
                    );
                    want_total += w as f64;
                }
                assert!((total - want_total).abs() <= want_total * 1e-12, "{n} {t}");
                if n > 0 {
                    assert!(w.contains(&1.0), "the best token weighs 1");
                }
            }
        }
        let mut w = vec![5.0];
        let none = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(token_weights(&none, 1.0, 40.0, &mut w), 0.0);
        assert!(w.is_empty());
    }

    /// The weights are the bits of the plain formula compiled for the baseline instruction set
    /// (this test's own code), whichever version `token_weights` runs on this CPU: no multiply
    /// and add fused, the same order of operations.
    #[test]
    fn weights_are_the_baseline_bits() {
        for t in [0.3f32, 0.7, 1.0, 1.9] {
            let l = logits(5000);
            let mut w = Vec::new();
            token_weights(&l, t, 40.0, &mut w);
            let best = l
                .iter()
                .filter(|v| v.is_finite())
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
                / t;
            for (i, (&l, &w)) in l.iter().zip(&w).enumerate() {
                let x = l / t - best;
                let want = if l.is_finite() && x > -40.0 {
                    crate::activation::exp(x.max(-40.0))
                } else {
                    0.0
                };
                assert_eq!(w.to_bits(), want.to_bits(), "t {t}, token {i}");
            }
        }
    }

    /// Counts and sums at or above a floor against a plain filter.
    #[test]
    fn at_or_above_counts_and_sums_the_heavy_weights() {
        let l = logits(1000);
        let mut w = Vec::new();
        token_weights(&l, 0.7, 40.0, &mut w);
        for floor in [0.0, 1e-12, 1e-6, 0.01, 0.5, 1.0, 1.5] {
            let (n, mass) = at_or_above(&w, floor);
            let want: Vec<f64> = w
                .iter()
                .filter(|&&w| w >= floor)
                .map(|&w| w as f64)
                .collect();
            assert_eq!(n, want.len(), "{floor}");
            let sum: f64 = want.iter().sum();
            assert!((mass - sum).abs() <= sum * 1e-12, "{floor}");
        }
    }

    /// The draw against a plain walk: the first index whose running sum reaches `r`, never a
    /// token of weight 0, and none past the total.
    #[test]
    fn draw_finds_the_first_index_reaching_r() {
        let mut w: Vec<f32> = (0..1000)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    (i % 17) as f32 / 8.0
                }
            })
            .collect();
        w[999] = 0.0;
        let total: f64 = w.iter().map(|&w| w as f64).sum();
        for k in 0..500 {
            let r = total * (k as f64 + 0.5) / 500.0;
            let got = draw(&w, r).expect("r below the total");
            assert!(w[got] > 0.0);
            let before: f64 = w[..got].iter().map(|&w| w as f64).sum();
            assert!(
                before < r + 1e-9 && before + w[got] as f64 >= r - 1e-9,
                "{k}"
            );
        }
        assert_eq!(draw(&w, total * 1.01), None);
        assert_eq!(draw(&[], 0.5), None);
    }
}
