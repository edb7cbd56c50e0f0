//! Causal attention of a decoder's new rows over one sequence's KV cache: grouped-query heads,
//! an optional sliding window, softmax as ggml computes it (`f64` sum, `f32` reciprocal), and
//! optionally probabilities rounded to `f16` before they meet the values (llama.cpp's
//! arithmetic for an `f16` cache). Rows are independent and split over threads when the work
//! is large (long prompts). The cache is `f32`, or `f16` bits ([`CacheView`]): half the bytes
//! to read at every step, for the same results.

use crate::parallel::PARALLEL_FLOP_THRESHOLD;
use crate::quant::half_to_f32;

#[cfg(target_arch = "x86_64")]
mod prefill;

/// One sequence's cached keys and values, `kv_heads * head_dim` values per position.
#[derive(Debug, Clone, Copy)]
pub enum CacheView<'a> {
    /// Keys and values in `f32`.
    F32 {
        /// The keys.
        keys: &'a [f32],
        /// The values.
        values: &'a [f32],
    },
    /// Keys and values as `f16` bits (values that were rounded to `f16` before caching give
    /// exactly the results of the `f32` form).
    F16 {
        /// The keys.
        keys: &'a [u16],
        /// The values.
        values: &'a [u16],
    },
}

impl CacheView<'_> {
    /// Values held by the shorter of keys and values.
    fn len(&self) -> usize {
        match self {
            CacheView::F32 { keys, values } => keys.len().min(values.len()),
            CacheView::F16 { keys, values } => keys.len().min(values.len()),
        }
    }
}

/// Whether an `f16` cache pays on this CPU for heads `head_dim` wide: where the AVX-512
/// kernels widen 16 values per instruction, and the heads are whole chunks of 64 values for
/// them. Elsewhere each `f16` value would cost a plain conversion, more than the memory it
/// saves.
pub fn f16_cache_pays(head_dim: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512
        && head_dim.is_multiple_of(PV_CHUNK)
}

/// An element type of a cache: `f32`, or `f16` bits (`u16`); the AVX-512 loads read `T` as
/// `u16` when `F16` and as `f32` otherwise, so no other type may implement it.
trait CacheValue: Copy + Send + Sync {
    /// Whether the element is `f16` bits (read by the AVX-512 loads).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const F16: bool;
    /// The element as `f32`.
    fn to_f32(self) -> f32;
}

impl CacheValue for f32 {
    const F16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl CacheValue for u16 {
    const F16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half_to_f32(self)
    }
}

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
/// at positions `start..start + rows`, over the `cache` (all positions up to the last row
/// already written). Writes `[rows, heads * head_dim]` into `out`.
///
/// # Panics
/// If `out` is not whole rows, or the slices are shorter than the shape and row count require.
pub fn causal_cached(
    shape: &CausalShape,
    queries: &[f32],
    q_stride: usize,
    cache: CacheView<'_>,
    start: usize,
    out: &mut [f32],
) {
    let q_w = shape.heads * shape.head_dim;
    assert!(q_w > 0 && out.len().is_multiple_of(q_w), "whole rows");
    let rows = out.len() / q_w;
    let kv_w = shape.kv_heads * shape.head_dim;
    assert!(
        queries.len() >= rows.saturating_sub(1) * q_stride + q_w,
        "queries"
    );
    assert!(cache.len() >= (start + rows) * kv_w, "cache");
    let parallel = rows > 1 && rows * (start + rows) * q_w * 4 >= PARALLEL_FLOP_THRESHOLD;
    #[cfg(target_arch = "x86_64")]
    if prefill::applies(shape, rows) {
        return prefill::causal_rows(shape, queries, q_stride, cache, start, out, parallel);
    }
    let row = |r: usize, o: &mut [f32]| {
        let q = &queries[r * q_stride..r * q_stride + q_w];
        attend_row(shape, q, cache, start + r, o);
    };
    if parallel {
        crate::parallel::for_each_chunk_mut(out, q_w, row);
    } else {
        out.chunks_mut(q_w).enumerate().for_each(|(r, o)| row(r, o));
    }
}

/// One sequence's part of a batched [`causal_cached_many`] call: the arguments of
/// [`causal_cached`] for that sequence.
pub struct CausalJob<'a> {
    /// The sequence's new rows' queries, each starting a `q_stride`-wide row.
    pub queries: &'a [f32],
    /// Distance between consecutive rows' queries.
    pub q_stride: usize,
    /// The sequence's cached keys and values, the new rows' included.
    pub cache: CacheView<'a>,
    /// Position of the first new row.
    pub start: usize,
    /// Where the new rows' outputs go.
    pub out: &'a mut [f32],
}

/// Work (as in [`causal_cached_many`]) above which a batch's sequences are split over threads.
///
/// The kernel team's helper spins between jobs (no wake-up), so this is far below the general
/// threshold: 8 SmolLM2 sequences 40 positions long (0.7 M) ran on the step's thread alone
/// (perf at 8 streams, 2026-12-02: attention 4.6% of the samples there, 0.4% on the helper).
const MANY_PARALLEL_WORK: usize = PARALLEL_FLOP_THRESHOLD / 16;

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
        causal_cached(shape, j.queries, j.q_stride, j.cache, j.start, j.out)
    };
    if jobs.len() > 1 && work >= MANY_PARALLEL_WORK && crate::parallel::threads() > 1 {
        crate::parallel::for_each_mut(jobs, run);
    } else {
        jobs.iter_mut().for_each(run);
    }
}

crate::cpu::multiversion! {
    /// One row at position `pos`: every query head of `q` over the visible cached positions.
    pub fn attend_row(
        shape: &CausalShape,
        q: &[f32],
        cache: CacheView<'_>,
        pos: usize,
        out: &mut [f32],
    ) {
        match cache {
            CacheView::F32 { keys, values } => attend(shape, q, keys, values, pos, out),
            CacheView::F16 { keys, values } => attend(shape, q, keys, values, pos, out),
        }
    }
}

/// [`attend_row`] over one cache element type.
///
/// The query heads that share a key/value head are computed together, so that each cached
/// key and value is read from memory once for all of them (the cache of a long batch does not
/// fit in the CPU caches); each head's arithmetic is the same as alone.
#[inline(always)]
fn attend<T: CacheValue>(
    shape: &CausalShape,
    q: &[f32],
    keys: &[T],
    values: &[T],
    pos: usize,
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let kv_w = shape.kv_heads * d;
    let group = shape.heads / shape.kv_heads;
    let first = first_visible(shape, pos);
    let n = pos + 1 - first;
    #[cfg(target_arch = "x86_64")]
    let avx512 = crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512;
    // Row `h` holds query head `kv · group + h`'s scores, then its probabilities.
    let mut probs = vec![0.0f32; group * n];
    for kv in 0..shape.kv_heads {
        let off = kv * d;
        let heads = kv * group..(kv + 1) * group;
        // Positions whose scores the AVX-512 kernel formed, up to 16 at a time.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if avx512 && d.is_multiple_of(16) {
            while done < n {
                let count = (n - done).min(16);
                let at = (first + done) * kv_w + off;
                let span = &keys[at..at + (count - 1) * kv_w + d];
                for (h, head) in heads.clone().enumerate() {
                    let qh = &q[head * d..(head + 1) * d];
                    let s = &mut probs[h * n + done..h * n + done + count];
                    // SAFETY: simd_level() reported AVX-512F; `s` holds `count`, 1 to 16, values
                    // (`done < n`), `span` the `count` keys of this chunk (`(count - 1) kv_w + d`
                    // values from the first) and `qh` is `d` values, `d` a multiple of 16, as
                    // `scores16` requires (it checks them too).
                    unsafe { avx512::scores16(qh, span, kv_w, shape.scale, s) };
                }
                done += count;
            }
        }
        for i in done..n {
            let k = &keys[(first + i) * kv_w + off..(first + i) * kv_w + off + d];
            for (h, head) in heads.clone().enumerate() {
                probs[h * n + i] = score(&q[head * d..(head + 1) * d], k) * shape.scale;
            }
        }
        finish(shape, &mut probs, n, values, first, kv, out);
    }
}

/// The first position a row at `pos` sees.
fn first_visible(shape: &CausalShape, pos: usize) -> usize {
    shape.window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// The rest of one row's attention for key/value head `kv`, its `group` query heads' scores
/// (row `h` of `probs`, `n` positions from `first`) in hand: softmax, then the weighted values
/// into those heads' outputs in `out`.
#[inline(always)]
fn finish<T: CacheValue>(
    shape: &CausalShape,
    probs: &mut [f32],
    n: usize,
    values: &[T],
    first: usize,
    kv: usize,
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let kv_w = shape.kv_heads * d;
    let group = shape.heads / shape.kv_heads;
    let off = kv * d;
    #[cfg(target_arch = "x86_64")]
    let avx512 = crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512;
    let probs = &mut probs[..group * n];
    for row in probs.chunks_exact_mut(n) {
        softmax(row, shape.f16_probs);
    }
    // The weighted values, 64 outputs of up to 4 heads at a time, summed in registers
    // (summing into `out` would make each position wait for the previous one's store).
    for (c, rows) in probs.chunks(4 * n).enumerate() {
        let h0 = kv * group + 4 * c;
        for c0 in (0..d).step_by(PV_CHUNK) {
            let width = PV_CHUNK.min(d - c0);
            let at = first * kv_w + off + c0;
            let v = &values[at..];
            let o = &mut out[h0 * d + c0..];
            macro_rules! sums {
                ($h:literal) => {{
                    #[cfg(target_arch = "x86_64")]
                    if avx512 && width == PV_CHUNK {
                        // SAFETY: simd_level() reported AVX-512F; `rows` holds `$h` rows
                        // of `n` probabilities and `v` the `n` value rows of `PV_CHUNK`
                        // values, `kv_w` apart.
                        let s = unsafe { avx512::weighted::<T, $h>(rows, n, v, kv_w) };
                        put(&s, d, width, o);
                        continue;
                    }
                    put(&weighted::<T, $h>(rows, n, v, kv_w, width), d, width, o)
                }};
            }
            match rows.len() / n {
                1 => sums!(1),
                2 => sums!(2),
                3 => sums!(3),
                _ => sums!(4),
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
///
/// Every loop vectorizes and gives the same bits on every target (the browser build picks the
/// server's tokens): the maximum and the `f64` sum run in 8 lanes, then the lanes in order,
/// and `e^x` is [`crate::activation::exp`] (plain multiplies and adds, about 2e-7 from the
/// correctly rounded value, far below the `f16` rounding of the probabilities).
#[inline(always)]
fn softmax(row: &mut [f32], f16_probs: bool) {
    const LANES: usize = 8;
    let mut top = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let mut max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (t, &v) in top.iter_mut().zip(c) {
            *t = t.max(v);
        }
    }
    max = top.iter().copied().fold(max, f32::max);
    for s in row.iter_mut() {
        *s = crate::activation::exp(*s - max);
    }
    let mut lanes = [0.0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v as f64;
        }
    }
    let mut total = 0.0f64;
    for &l in &lanes {
        total += l;
    }
    for &s in rest {
        total += s as f64;
    }
    let inv = (1.0 / total) as f32;
    for s in row.iter_mut() {
        *s *= inv;
    }
    if f16_probs {
        crate::quant::round_to_f16_slice(row);
    }
}

/// `Σ_i p_h[i] · v_i[..width]` for `H` heads whose `n` probabilities are the rows of `probs`,
/// `v_i = values[i · stride ..]`; each value row is read once for all the heads.
#[inline(always)]
fn weighted<T: CacheValue, const H: usize>(
    probs: &[f32],
    n: usize,
    values: &[T],
    stride: usize,
    width: usize,
) -> [[f32; PV_CHUNK]; H] {
    let mut acc = [[0.0f32; PV_CHUNK]; H];
    for i in 0..n {
        let v = &values[i * stride..i * stride + width];
        if let Ok(v) = <&[T; PV_CHUNK]>::try_from(v) {
            // Fixed width: the compiler keeps `acc` in registers.
            for (h, acc) in acc.iter_mut().enumerate() {
                let p = probs[h * n + i];
                for (a, &v) in acc.iter_mut().zip(v) {
                    *a += p * v.to_f32();
                }
            }
        } else {
            for (h, acc) in acc.iter_mut().enumerate() {
                let p = probs[h * n + i];
                for (a, &v) in acc[..width].iter_mut().zip(v) {
                    *a += p * v.to_f32();
                }
            }
        }
    }
    acc
}

/// `q · k` as attention sums it: 16 lane sums over the 16-wide chunks, then the lanes in
/// order, then the rest (the AVX-512 `scores16` forms exactly these sums).
#[inline(always)]
fn score<T: CacheValue>(q: &[f32], k: &[T]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (cq, ck) = (q.chunks_exact(16), k.chunks_exact(16));
    let (rq, rk) = (cq.remainder(), ck.remainder());
    for (a, b) in cq.zip(ck) {
        for j in 0..16 {
            acc[j] += a[j] * b[j].to_f32();
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (a, b) in rq.iter().zip(rk) {
        sum += a * b.to_f32();
    }
    sum
}

/// The AVX-512 forms of the scores (16 positions at a time), of the weighted value sums, and the
/// cache loads they share.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CacheValue, PV_CHUNK};
    use std::arch::x86_64::*;

    /// `out[p] = score(q, k_p) · scale` for the `out.len()` (at most 16) keys
    /// `k_p = keys[p · stride ..][..d]`, bit-identical to the plain [`super::score`]: the 16
    /// lane sums of each key are formed in the same order, transposed so that lane `p` of
    /// register `j` is key `p`'s lane `j`, and added up `j` by `j` for all the keys at once.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `q.len()` is a multiple of 16, `out` holds 1 to 16 values,
    /// and `keys` at least `(out.len() - 1) · stride + q.len()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores16<T: CacheValue>(
        q: &[f32],
        keys: &[T],
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let (d, count) = (q.len(), out.len());
        assert!(d.is_multiple_of(16) && (1..=16).contains(&count));
        let span = (count - 1)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(d));
        assert!(span.is_some_and(|span| keys.len() >= span), "keys");
        // SAFETY: loads read `q[16 c..16 c + 16]` for `16 c < d` and the same span of each of
        // the `count` keys, all inside the slices (checked above); the store writes
        // `out[..count]`.
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            if count == 16 {
                // A fixed trip count keeps the 16 sums in registers (a loop of `count` kept
                // them in memory: a load and a store around every add, seen in perf).
                for c in (0..d).step_by(16) {
                    let qc = _mm512_loadu_ps(q.as_ptr().add(c));
                    for (p, r) in r.iter_mut().enumerate() {
                        let k = load16(keys.as_ptr().add(p * stride + c));
                        *r = _mm512_add_ps(*r, _mm512_mul_ps(qc, k));
                    }
                }
            } else {
                for c in (0..d).step_by(16) {
                    let qc = _mm512_loadu_ps(q.as_ptr().add(c));
                    for (p, r) in r.iter_mut().enumerate().take(count) {
                        let k = load16(keys.as_ptr().add(p * stride + c));
                        *r = _mm512_add_ps(*r, _mm512_mul_ps(qc, k));
                    }
                }
            }
            let t = transpose16(r);
            let mut sum = t[0];
            for t in &t[1..] {
                sum = _mm512_add_ps(sum, *t);
            }
            let mask = (1u32 << count).wrapping_sub(1) as u16;
            _mm512_mask_storeu_ps(
                out.as_mut_ptr(),
                mask,
                _mm512_mul_ps(sum, _mm512_set1_ps(scale)),
            );
        }
    }

    /// [`super::weighted`] for a full [`PV_CHUNK`] of outputs, the sums in 4 registers per
    /// head and each row of values widened once for all the heads; bit-identical to it.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `probs` holds `H · n` values and `values` at least
    /// `(n - 1) · stride + PV_CHUNK`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted<T: CacheValue, const H: usize>(
        probs: &[f32],
        n: usize,
        values: &[T],
        stride: usize,
    ) -> [[f32; PV_CHUNK]; H] {
        assert!(
            H.checked_mul(n).is_some_and(|hn| probs.len() >= hn),
            "probs"
        );
        let span = n.checked_sub(1).map(|last| {
            last.checked_mul(stride)
                .and_then(|s| s.checked_add(PV_CHUNK))
        });
        assert!(
            span.is_none_or(|span| span.is_some_and(|span| values.len() >= span)),
            "values"
        );
        // SAFETY: row `i < n` reads `values[i · stride .. i · stride + PV_CHUNK]` and
        // `probs[h · n + i]`, `h < H`, inside the slices (checked above); the stores write the
        // local arrays.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; H];
            for i in 0..n {
                let row = values.as_ptr().add(i * stride);
                let v = [
                    load16(row),
                    load16(row.add(16)),
                    load16(row.add(32)),
                    load16(row.add(48)),
                ];
                for (h, acc) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(*probs.get_unchecked(h * n + i));
                    for (a, v) in acc.iter_mut().zip(v) {
                        *a = _mm512_add_ps(*a, _mm512_mul_ps(p, v));
                    }
                }
            }
            let mut out = [[0.0f32; PV_CHUNK]; H];
            for (o, acc) in out.iter_mut().zip(&acc) {
                for (j, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(o.as_mut_ptr().add(16 * j), *a);
                }
            }
            out
        }
    }

    /// 16 cache values from `p`, widened to `f32`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `p` must point at 16 readable values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn load16<T: CacheValue>(p: *const T) -> __m512 {
        // Folded at compile time: `T` is 2 bytes (f16 bits) when `T::F16`, else 4 (`f32`).
        assert!(std::mem::size_of::<T>() == if T::F16 { 2 } else { 4 });
        // SAFETY: the caller's duty; `T` is `u16` (f16 bits) when `T::F16`, else `f32` (sizes
        // checked above), and `f16` to `f32` is exact.
        unsafe {
            if T::F16 {
                _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
            } else {
                _mm512_loadu_ps(p as *const f32)
            }
        }
    }

    /// The transpose of a 16 × 16 matrix held as 16 rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // Plain loops: written with `std::array::from_fn` closures, the shuffles were compiled
        // as calls (seen in perf) once the caller became generic.
        // Within each 128-bit lane: pairs, then quads of rows.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        // u[4 g + k], 128-bit lane L: rows 4g..4g+4 of column 4L + k.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            for k in 0..4 {
                let (a, b) = (t[4 * g + k / 2], t[4 * g + 2 + k / 2]);
                u[4 * g + k] = if k % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm512_shuffle_ps::<0xEE>(a, b)
                };
            }
        }
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

/// Outputs of one head summed together in registers (four AVX-512 registers).
const PV_CHUNK: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::round_to_f16;

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
            let cache = CacheView::F32 { keys: k, values: v };
            causal_cached(&shape, q, q_w, cache, start, &mut out);
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
                cache: CacheView::F32 { keys: k, values: v },
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
            let cache = CacheView::F32 {
                keys: &keys,
                values: &values,
            };
            causal_cached(&shape, &queries, stride, cache, start, &mut out);
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

    /// A prompt chunk's rows attended together (on AVX-512: over keys transposed once, two
    /// rows and up to four heads at a time) give the bits of attending them one by one: `f32`
    /// and `f16` caches, head widths 16 to 256, 1 to 8 heads per key/value head, windows,
    /// chunks starting on and off a 16-position boundary, row pairs straddling one, odd and
    /// even row counts.
    #[test]
    fn prompt_chunks_equal_row_by_row_attention_bit_for_bit() {
        use crate::quant::f32_to_half;
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1009) as f32 / 100.9) - 5.0;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (heads, kv_heads, head_dim, window, f16) in [
            (9, 3, 64, None, true),
            (4, 1, 256, Some(21), true),
            (14, 2, 64, None, true),
            // Qwen 3 0.6B's heads: 128 wide, two query heads per key/value head.
            (16, 8, 128, None, true),
            (4, 2, 32, Some(16), true),
            (6, 2, 48, Some(5), true),
            (4, 4, 16, None, false),
            (8, 1, 32, Some(37), false),
            (6, 2, 48, None, false),
        ] {
            let shape = CausalShape {
                heads,
                kv_heads,
                head_dim,
                window,
                // Not a power of two: scaling rounds, so its place in the order matters.
                scale: 0.3,
                f16_probs: f16,
            };
            let (q_w, kv_w) = (heads * head_dim, kv_heads * head_dim);
            for (start, rows) in [(0, 8), (5, 9), (15, 20), (40, 33), (96, 20)] {
                #[cfg(target_arch = "x86_64")]
                if crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512 {
                    assert!(prefill::applies(&shape, rows), "the chunk kernel is tested");
                }
                let kv = (start + rows) * kv_w;
                let round = |v: f32| if f16 { round_to_f16(v) } else { v };
                let keys: Vec<f32> = (0..kv).map(|i| round(f(i, 1))).collect();
                let values: Vec<f32> = (0..kv).map(|i| round(f(i, 2))).collect();
                let stride = q_w + 3;
                let queries: Vec<f32> = (0..rows * stride).map(|i| f(i, 3)).collect();
                let (k16, v16): (Vec<u16>, Vec<u16>) = (
                    keys.iter().map(|&v| f32_to_half(v)).collect(),
                    values.iter().map(|&v| f32_to_half(v)).collect(),
                );
                let cache = if f16 {
                    CacheView::F16 {
                        keys: &k16,
                        values: &v16,
                    }
                } else {
                    CacheView::F32 {
                        keys: &keys,
                        values: &values,
                    }
                };
                let mut together = vec![f32::NAN; rows * q_w];
                causal_cached(&shape, &queries, stride, cache, start, &mut together);
                let mut alone = vec![f32::NAN; rows * q_w];
                for (r, o) in alone.chunks_mut(q_w).enumerate() {
                    causal_cached(&shape, &queries[r * stride..], stride, cache, start + r, o);
                }
                assert_eq!(
                    bits(&together),
                    bits(&alone),
                    "{shape:?}, start {start}, {rows} rows"
                );
                assert!(alone.iter().all(|v| v.is_finite()));
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
        for (d, stride, count) in [(16, 16, 16), (64, 192, 16), (256, 256, 16), (64, 192, 5)] {
            let q: Vec<f32> = (0..d).map(|i| f(i, 1)).collect();
            let keys: Vec<f32> = (0..(count - 1) * stride + d).map(|i| f(i, 2)).collect();
            // Past `count`, sentinels the masked store must leave alone.
            let mut buf = [f32::NAN; 16];
            buf[count..].fill(-7.0);
            // SAFETY: AVX-512F checked above; `keys` holds `count` rows `stride >= d` apart.
            unsafe { avx512::scores16(&q, &keys, stride, 0.125, &mut buf[..count]) };
            assert!(
                buf[count..].iter().all(|&v| v == -7.0),
                "stored past {count}"
            );
            let got = &buf[..count];
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

    /// An `f16` cache gives bit-identical results to the same `f16`-rounded values in `f32`,
    /// on the AVX-512 kernels and the plain code (head widths a multiple of 16 and not, full
    /// and partial chunks of 16 positions, heads grouped 1 to 7 per key/value head).
    #[test]
    fn f16_cache_equals_the_f32_cache_bit_for_bit() {
        use crate::quant::f32_to_half;
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1009) as f32 / 100.9) - 5.0;
        for (heads, kv_heads, head_dim, window) in [
            (9, 3, 64, None),
            (4, 1, 256, Some(20)),
            (14, 2, 64, None),
            (16, 8, 128, None),
            (4, 2, 24, None),
        ] {
            let shape = CausalShape {
                heads,
                kv_heads,
                head_dim,
                window,
                scale: 0.125,
                f16_probs: true,
            };
            let (q_w, kv_w) = (heads * head_dim, kv_heads * head_dim);
            for (start, rows) in [(0, 1), (36, 1), (5, 12)] {
                let kv = (start + rows) * kv_w;
                let keys: Vec<f32> = (0..kv).map(|i| round_to_f16(f(i, 1))).collect();
                let values: Vec<f32> = (0..kv).map(|i| round_to_f16(f(i, 2))).collect();
                let queries: Vec<f32> = (0..rows * q_w).map(|i| f(i, 3)).collect();
                let k16: Vec<u16> = keys.iter().map(|&v| f32_to_half(v)).collect();
                let v16: Vec<u16> = values.iter().map(|&v| f32_to_half(v)).collect();
                let mut want = vec![f32::NAN; rows * q_w];
                let wide = CacheView::F32 {
                    keys: &keys,
                    values: &values,
                };
                causal_cached(&shape, &queries, q_w, wide, start, &mut want);
                let mut got = vec![f32::NAN; rows * q_w];
                let narrow = CacheView::F16 {
                    keys: &k16,
                    values: &v16,
                };
                causal_cached(&shape, &queries, q_w, narrow, start, &mut got);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{shape:?}, start {start}, {rows} rows"
                );
                assert!(want.iter().all(|v| v.is_finite()));
            }
        }
    }

    /// The AVX-512 weighted value sums equal the plain ones bit for bit (the browser build runs
    /// the plain code and must pick the server's tokens), for `f32` and `f16` values, 1 to 4
    /// heads and 0, 1 and 17 positions.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_weighted_sums_equal_the_plain_sums_bit_for_bit() {
        use crate::quant::f32_to_half;
        if crate::cpu::simd_level() != crate::cpu::SimdLevel::Avx512 {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let f = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) % 1009) as f32 / 50.5) - 10.0;
        let stride = 192;
        let bits = |v: &[[f32; PV_CHUNK]]| {
            v.iter()
                .flat_map(|r| r.iter().map(|x| x.to_bits()))
                .collect::<Vec<_>>()
        };
        for n in [0, 1, 17] {
            let probs: Vec<f32> = (0..4 * n).map(|i| f(i, 1).abs() / 10.0).collect();
            let wide: Vec<f32> = (0..n * stride + PV_CHUNK)
                .map(|i| round_to_f16(f(i, 2)))
                .collect();
            let narrow: Vec<u16> = wide.iter().map(|&v| f32_to_half(v)).collect();
            macro_rules! check {
                ($h:literal) => {{
                    let p = &probs[..$h * n];
                    let want = weighted::<f32, $h>(p, n, &wide, stride, PV_CHUNK);
                    // SAFETY: AVX-512F checked above; `p` holds `$h · n` values and the value
                    // slices `n` rows `stride` apart plus a full chunk.
                    let got = unsafe { avx512::weighted::<f32, $h>(p, n, &wide, stride) };
                    assert_eq!(bits(&got), bits(&want), "f32, {} heads, {n} positions", $h);
                    // SAFETY: as above.
                    let got = unsafe { avx512::weighted::<u16, $h>(p, n, &narrow, stride) };
                    assert_eq!(bits(&got), bits(&want), "f16, {} heads, {n} positions", $h);
                }};
            }
            check!(1);
            check!(2);
            check!(3);
            check!(4);
        }
    }
}
