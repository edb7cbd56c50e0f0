//! Causal attention of a decoder's new rows over one sequence's KV cache: grouped-query heads,
//! an optional sliding window, softmax as ggml computes it (`f64` sum, `f32` reciprocal), and
//! optionally probabilities rounded to `f16` before they meet the values (llama.cpp's
//! arithmetic for an `f16` cache). Rows are independent and split over threads when the work
//! is large (long prompts).

use crate::parallel::prelude::*;
use crate::parallel::PARALLEL_FLOP_THRESHOLD;
use crate::quant::round_to_f16;

/// Shape and arithmetic of a cached causal attention call.
#[derive(Debug, Clone, Copy)]
pub struct CausalShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Each row sees at most this many latest positions (itself included), if set.
    pub window: Option<usize>,
    /// Factor applied to every query-key product.
    pub scale: f32,
    /// Round probabilities to `f16` before weighting the values.
    pub f16_probs: bool,
}

/// Attention of `rows` new rows whose queries start each `q_stride`-wide row of `queries`,
/// at positions `start..start + rows`, over `keys`/`values` (`kv_heads * head_dim` per
/// position, all positions up to the last row already written). Writes `[rows, heads *
/// head_dim]` into `out`.
///
/// # Panics
/// If the slices are shorter than the shape and row count require.
pub fn causal_cached(
    shape: &CausalShape,
    queries: &[f32],
    q_stride: usize,
    keys: &[f32],
    values: &[f32],
    start: usize,
    out: &mut [f32],
) {
    let q_w = shape.heads * shape.head_dim;
    let rows = out.len() / q_w;
    let kv_w = shape.kv_heads * shape.head_dim;
    assert!(
        queries.len() >= rows.saturating_sub(1) * q_stride + q_w,
        "queries"
    );
    assert!(
        keys.len() >= (start + rows) * kv_w && values.len() >= (start + rows) * kv_w,
        "cache"
    );
    let work = rows * (start + rows) * q_w * 4;
    let row = |(r, o): (usize, &mut [f32])| {
        let q = &queries[r * q_stride..r * q_stride + q_w];
        attend_row(shape, q, keys, values, start + r, o);
    };
    if work >= PARALLEL_FLOP_THRESHOLD && rows > 1 {
        out.par_chunks_mut(q_w).enumerate().for_each(row);
    } else {
        out.chunks_mut(q_w).enumerate().for_each(row);
    }
}

/// One sequence's part of a batched [`causal_cached_many`] call: the arguments of
/// [`causal_cached`] for that sequence.
pub struct CausalJob<'a> {
    /// The sequence's new rows' queries, each starting a `q_stride`-wide row.
    pub queries: &'a [f32],
    /// Distance between consecutive rows' queries.
    pub q_stride: usize,
    /// The sequence's cached keys, the new rows' included.
    pub keys: &'a [f32],
    /// The sequence's cached values, the new rows' included.
    pub values: &'a [f32],
    /// Position of the first new row.
    pub start: usize,
    /// Where the new rows' outputs go.
    pub out: &'a mut [f32],
}

/// [`causal_cached`] for several sequences (one batched decode step): the sequences are
/// independent, so they are split over threads when the work pays for it. Results are
/// exactly those of calling [`causal_cached`] on each.
pub fn causal_cached_many(shape: &CausalShape, jobs: &mut [CausalJob<'_>]) {
    let q_w = shape.heads * shape.head_dim;
    let work: usize = jobs
        .iter()
        .map(|j| {
            let rows = j.out.len() / q_w;
            rows * (j.start + rows) * q_w * 4
        })
        .sum();
    let run = |j: &mut CausalJob<'_>| {
        causal_cached(
            shape, j.queries, j.q_stride, j.keys, j.values, j.start, j.out,
        )
    };
    if jobs.len() > 1 && work >= PARALLEL_FLOP_THRESHOLD && crate::parallel::threads() > 1 {
        jobs.into_par_iter().for_each(run);
    } else {
        jobs.iter_mut().for_each(run);
    }
}

crate::cpu::multiversion! {
    /// One row at position `pos`: every query head of `q` over the visible cached positions.
    ///
    /// The query heads that share a key/value head are computed together, so that each cached
    /// key and value is read from memory once for all of them (the cache of a long batch does
    /// not fit in the CPU caches); each head's arithmetic is the same as alone.
    pub fn attend_row(
        shape: &CausalShape,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        pos: usize,
        out: &mut [f32],
    ) {
        let d = shape.head_dim;
        let kv_w = shape.kv_heads * d;
        let group = shape.heads / shape.kv_heads;
        let first = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let n = pos + 1 - first;
        // Row `h` holds query head `kv · group + h`'s scores, then its probabilities.
        let mut probs = vec![0.0f32; group * n];
        for kv in 0..shape.kv_heads {
            let off = kv * d;
            let heads = kv * group..(kv + 1) * group;
            // Positions whose scores the AVX-512 kernel formed, 16 at a time.
            #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if d.is_multiple_of(16) && crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512 {
                while done + 16 <= n {
                    let at = (first + done) * kv_w + off;
                    let span = &keys[at..at + 15 * kv_w + d];
                    for (h, head) in heads.clone().enumerate() {
                        let qh = &q[head * d..(head + 1) * d];
                        let s16 = &mut probs[h * n + done..h * n + done + 16];
                        // SAFETY: simd_level() reported AVX-512F; `span` holds the 16 keys of
                        // this chunk (`15 kv_w + d` values from the first) and `qh` is `d`
                        // values, `d` a multiple of 16, as `scores16` requires.
                        unsafe { avx512::scores16(qh, span, kv_w, shape.scale, s16) };
                    }
                    done += 16;
                }
            }
            for i in done..n {
                let k = &keys[(first + i) * kv_w + off..(first + i) * kv_w + off + d];
                for (h, head) in heads.clone().enumerate() {
                    probs[h * n + i] = score(&q[head * d..(head + 1) * d], k) * shape.scale;
                }
            }
            for row in probs.chunks_exact_mut(n) {
                softmax(row, shape.f16_probs);
            }
            // The weighted values, up to 64 outputs of up to 4 heads at a time, summed in
            // registers (summing into `out` would make each position wait for the previous
            // one's store).
            for (c, rows) in probs.chunks(4 * n).enumerate() {
                let h0 = kv * group + 4 * c;
                for c0 in (0..d).step_by(PV_CHUNK) {
                    let width = PV_CHUNK.min(d - c0);
                    let at = first * kv_w + off + c0;
                    let v = &values[at..];
                    let o = &mut out[h0 * d + c0..];
                    match rows.len() / n {
                        1 => put(&weighted::<1>(rows, n, v, kv_w, width), d, width, o),
                        2 => put(&weighted::<2>(rows, n, v, kv_w, width), d, width, o),
                        3 => put(&weighted::<3>(rows, n, v, kv_w, width), d, width, o),
                        _ => put(&weighted::<4>(rows, n, v, kv_w, width), d, width, o),
                    }
                }
            }
        }
    }
}

/// Copies the first `width` sums of each head into `out`, heads `d` apart.
#[inline(always)]
fn put(sums: &[[f32; PV_CHUNK]], d: usize, width: usize, out: &mut [f32]) {
    for (h, acc) in sums.iter().enumerate() {
        out[h * d..h * d + width].copy_from_slice(&acc[..width]);
    }
}

/// Scores to probabilities in place, as ggml computes softmax: the maximum subtracted, the
/// exponentials summed in `f64`, an `f32` reciprocal, and optionally rounded to `f16`.
#[inline(always)]
fn softmax(row: &mut [f32], f16_probs: bool) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The exponentials first, then their sum: with no call inside it, the sum stays in a
    // register instead of crossing each `exp` call through the stack.
    for s in row.iter_mut() {
        *s = (*s - max).exp();
    }
    let mut total = 0.0f64;
    for &s in row.iter() {
        total += s as f64;
    }
    let inv = (1.0 / total) as f32;
    for s in row.iter_mut() {
        *s = if f16_probs {
            round_to_f16(*s * inv)
        } else {
            *s * inv
        };
    }
}

/// `Σ_i p_h[i] · v_i[..width]` for `H` heads whose `n` probabilities are the rows of `probs`,
/// `v_i = values[i · stride ..]`; each value row is read once for all the heads.
#[inline(always)]
fn weighted<const H: usize>(
    probs: &[f32],
    n: usize,
    values: &[f32],
    stride: usize,
    width: usize,
) -> [[f32; PV_CHUNK]; H] {
    let mut acc = [[0.0f32; PV_CHUNK]; H];
    for i in 0..n {
        let v = &values[i * stride..i * stride + width];
        if let Ok(v) = <&[f32; PV_CHUNK]>::try_from(v) {
            // Fixed width: the compiler keeps `acc` in registers.
            for (h, acc) in acc.iter_mut().enumerate() {
                let p = probs[h * n + i];
                for (a, &v) in acc.iter_mut().zip(v) {
                    *a += p * v;
                }
            }
        } else {
            for (h, acc) in acc.iter_mut().enumerate() {
                let p = probs[h * n + i];
                for (a, &v) in acc[..width].iter_mut().zip(v) {
                    *a += p * v;
                }
            }
        }
    }
    acc
}

/// `q · k` as attention sums it: 16 lane sums over the 16-wide chunks, then the lanes in
/// order, then the rest (the AVX-512 `scores16` forms exactly these sums).
#[inline(always)]
fn score(q: &[f32], k: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (cq, ck) = (q.chunks_exact(16), k.chunks_exact(16));
    let (rq, rk) = (cq.remainder(), ck.remainder());
    for (a, b) in cq.zip(ck) {
        for j in 0..16 {
            acc[j] += a[j] * b[j];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (a, b) in rq.iter().zip(rk) {
        sum += a * b;
    }
    sum
}

/// The AVX-512 form of 16 positions' scores.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `out[p] = score(q, k_p) · scale` for the 16 keys `k_p = keys[p · stride ..][..d]`,
    /// bit-identical to the plain [`super::score`]: the 16 lane sums of each key are formed
    /// in the same order, transposed so that lane `p` of register `j` is key `p`'s lane `j`, and
    /// added up `j` by `j` for all 16 keys at once.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `q.len()` is a multiple of 16, and `keys` holds at least
    /// `15 · stride + q.len()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores16(
        q: &[f32],
        keys: &[f32],
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let d = q.len();
        assert!(d.is_multiple_of(16) && keys.len() >= 15 * stride + d && out.len() >= 16);
        // SAFETY: loads read `q[16 c..16 c + 16]` for `16 c < d` and the same span of each of
        // the 16 keys, all inside the slices (checked above); the store writes `out[..16]`.
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            for c in (0..d).step_by(16) {
                let qc = _mm512_loadu_ps(q.as_ptr().add(c));
                for (p, r) in r.iter_mut().enumerate() {
                    let k = _mm512_loadu_ps(keys.as_ptr().add(p * stride + c));
                    *r = _mm512_add_ps(*r, _mm512_mul_ps(qc, k));
                }
            }
            let t = transpose16(r);
            let mut sum = t[0];
            for t in &t[1..] {
                sum = _mm512_add_ps(sum, *t);
            }
            _mm512_storeu_ps(out.as_mut_ptr(), _mm512_mul_ps(sum, _mm512_set1_ps(scale)));
        }
    }

    /// The transpose of a 16 × 16 matrix held as 16 rows.
    #[inline(always)]
    unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // SAFETY: register shuffles only; AVX-512F is enabled by the caller.
        unsafe {
            // Within each 128-bit lane: pairs, then quads of rows.
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // u[4 g + k], 128-bit lane L: rows 4g..4g+4 of column 4L + k.
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let (g, k) = (i / 4, i % 4);
                let (a, b) = (t[4 * g + k / 2], t[4 * g + 2 + k / 2]);
                if k % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm512_shuffle_ps::<0xEE>(a, b)
                }
            });
            // Gather the four row groups of each column from the 128-bit lanes.
            let mut out = [_mm512_setzero_ps(); 16];
            for k in 0..4 {
                let x = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
                let y = _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]);
                let x2 = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
                let y2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]);
                out[k] = _mm512_shuffle_f32x4::<0x88>(x, x2);
                out[8 + k] = _mm512_shuffle_f32x4::<0xDD>(x, x2);
                out[4 + k] = _mm512_shuffle_f32x4::<0x88>(y, y2);
                out[12 + k] = _mm512_shuffle_f32x4::<0xDD>(y, y2);
            }
            out
        }
    }
}

/// Outputs of one head summed together in registers (four AVX-512 registers).
const PV_CHUNK: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain attention in f64 for one row and head.
    fn reference(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        shape: &CausalShape,
        pos: usize,
        head: usize,
    ) -> Vec<f64> {
        let d = shape.head_dim;
        let kv_w = shape.kv_heads * d;
        let off = head / (shape.heads / shape.kv_heads) * d;
        let first = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let s: Vec<f64> = (first..=pos)
            .map(|p| {
                (0..d)
                    .map(|j| q[head * d + j] as f64 * keys[p * kv_w + off + j] as f64)
                    .sum::<f64>()
                    * shape.scale as f64
            })
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let total: f64 = e.iter().sum();
        (0..d)
            .map(|j| {
                e.iter()
                    .enumerate()
                    .map(|(i, w)| w / total * values[(first + i) * kv_w + off + j] as f64)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn many_sequences_at_once_match_one_at_a_time() {
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1009) as f32 / 504.5) - 1.0;
        let shape = CausalShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            window: None,
            scale: 0.25,
            f16_probs: false,
        };
        let (q_w, kv_w) = (64, 32);
        // (cached positions before, new rows): decoding rows and a prefill chunk, long enough
        // in total to be split over threads.
        let seqs = [(300, 1), (0, 7), (513, 1), (40, 3), (700, 1)];
        let data: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = seqs
            .iter()
            .enumerate()
            .map(|(i, &(start, rows))| {
                let q = (0..rows * q_w).map(|j| f(j, i)).collect();
                let k = (0..(start + rows) * kv_w).map(|j| f(j, i + 10)).collect();
                let v = (0..(start + rows) * kv_w).map(|j| f(j, i + 20)).collect();
                (q, k, v)
            })
            .collect();
        let mut one_by_one: Vec<Vec<f32>> = Vec::new();
        for (&(start, rows), (q, k, v)) in seqs.iter().zip(&data) {
            let mut out = vec![0.0; rows * q_w];
            causal_cached(&shape, q, q_w, k, v, start, &mut out);
            one_by_one.push(out);
        }
        let mut outs: Vec<Vec<f32>> = seqs.iter().map(|&(_, r)| vec![0.0; r * q_w]).collect();
        let mut jobs: Vec<CausalJob<'_>> = seqs
            .iter()
            .zip(&data)
            .zip(&mut outs)
            .map(|((&(start, _), (q, k, v)), out)| CausalJob {
                queries: q,
                q_stride: q_w,
                keys: k,
                values: v,
                start,
                out,
            })
            .collect();
        causal_cached_many(&shape, &mut jobs);
        drop(jobs);
        assert_eq!(outs, one_by_one);
    }

    #[test]
    fn matches_plain_attention_with_groups_and_windows() {
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1009) as f32 / 504.5) - 1.0;
        for window in [None, Some(5)] {
            let shape = CausalShape {
                heads: 4,
                kv_heads: 2,
                head_dim: 24,
                window,
                scale: 0.3,
                f16_probs: false,
            };
            let (start, rows, stride) = (7, 6, 4 * 24 + 10);
            let kv = (start + rows) * 2 * 24;
            let keys: Vec<f32> = (0..kv).map(|i| f(i, 1)).collect();
            let values: Vec<f32> = (0..kv).map(|i| f(i, 2)).collect();
            let queries: Vec<f32> = (0..rows * stride).map(|i| f(i, 3)).collect();
            let mut out = vec![f32::NAN; rows * 4 * 24];
            causal_cached(&shape, &queries, stride, &keys, &values, start, &mut out);
            for r in 0..rows {
                for h in 0..4 {
                    let want =
                        reference(&queries[r * stride..], &keys, &values, &shape, start + r, h);
                    for (j, w) in want.iter().enumerate() {
                        let got = out[r * 96 + h * 24 + j] as f64;
                        assert!(
                            (got - w).abs() < 1e-5,
                            "window {window:?} row {r} head {h}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// The AVX-512 scores of 16 positions are bit-identical to the plain per-position sums
    /// (native and WebAssembly builds must pick the same tokens).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_scores_equal_the_plain_sums_bit_for_bit() {
        if crate::cpu::simd_level() != crate::cpu::SimdLevel::Avx512 {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1009) as f32 / 50.5) - 10.0;
        for (d, stride) in [(16, 16), (64, 192), (256, 256)] {
            let q: Vec<f32> = (0..d).map(|i| f(i, 1)).collect();
            let keys: Vec<f32> = (0..16 * stride).map(|i| f(i, 2)).collect();
            let mut got = [f32::NAN; 16];
            // SAFETY: AVX-512F checked above; `keys` holds 16 rows of `stride >= d` values.
            unsafe { avx512::scores16(&q, &keys, stride, 0.125, &mut got) };
            for (p, g) in got.iter().enumerate() {
                let want = score(&q, &keys[p * stride..p * stride + d]) * 0.125;
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "d {d}, position {p}: {g} vs {want}"
                );
            }
        }
    }
}
