//! Causal attention of a prompt chunk's rows on AVX-512: the call's keys are transposed once
//! (16 positions to a register, [`KeysT`]), so the scores of two rows and up to four query
//! heads come from each key load, and no row transposes its lane sums. The arithmetic is the
//! row kernel's ([`super::score`]: 16 lane sums in order, then the lanes in order), so the
//! results are the same bits as attending row by row.

use super::{finish, first_visible, CacheValue, CacheView, CausalShape};
use std::arch::x86_64::*;

/// Positions in one block of transposed keys (one register).
const LANES: usize = 16;

/// Rows attended together (sharing each key load).
const ROWS: usize = 2;

/// Query heads scored together at most (sharing each key load).
const HEADS: usize = 4;

/// New rows from which a call transposes its keys: below this the transposition is not paid
/// back (decoding steps have one row).
const MIN_ROWS: usize = 8;

/// Whether [`causal_rows`] takes a call of `rows` new rows of `shape`: enough rows, AVX-512,
/// and heads whole registers wide.
pub(super) fn applies(shape: &CausalShape, rows: usize) -> bool {
    rows >= MIN_ROWS
        && shape.head_dim.is_multiple_of(LANES)
        && shape.head_dim > 0
        && crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512
}

/// [`super::causal_cached`] for a call that [`applies`], split over the kernel threads if
/// `parallel`; the caller has checked the slices' lengths.
pub(super) fn causal_rows(
    shape: &CausalShape,
    queries: &[f32],
    q_stride: usize,
    cache: CacheView<'_>,
    start: usize,
    out: &mut [f32],
    parallel: bool,
) {
    // The kernels below run AVX-512 code on the strength of this.
    assert!(
        applies(shape, MIN_ROWS),
        "no prompt-chunk kernel on this CPU"
    );
    let q_w = shape.heads * shape.head_dim;
    let rows = out.len() / q_w;
    let lowest = first_visible(shape, start);
    // The same code over either cache type.
    macro_rules! over {
        ($keys:expr, $values:expr) => {{
            let kt = KeysT::new(shape, $keys, lowest, start + rows);
            each_pair(out, q_w, parallel, |i, o| {
                // SAFETY: `applies` saw AVX-512 (F, and with it the BW, AVX2 and FMA of
                // `SimdLevel::Avx512`).
                unsafe { attend_rows(shape, &kt, queries, q_stride, $values, start, i, o) }
            })
        }};
    }
    match cache {
        CacheView::F32 { keys, values } => over!(keys, values),
        CacheView::F16 { keys, values } => over!(keys, values),
    }
}

/// Calls `f(i, chunk)` for the chunks of [`ROWS`] output rows, over the kernel threads if
/// `parallel`. The last rows see the most positions: they are handed out first, so that no
/// thread is left with a long one at the end.
fn each_pair(out: &mut [f32], q_w: usize, parallel: bool, f: impl Fn(usize, &mut [f32]) + Sync) {
    let mut chunks: Vec<(usize, &mut [f32])> =
        out.chunks_mut(ROWS * q_w).enumerate().rev().collect();
    if parallel {
        crate::parallel::for_each_mut(&mut chunks, |(i, o)| f(*i, o));
    } else {
        chunks.iter_mut().for_each(|(i, o)| f(*i, o));
    }
}

/// One call's keys, transposed: for each key/value head, blocks of [`LANES`] positions from
/// `base` (a multiple of 16), each block `head_dim` registers, register `j` holding value `j`
/// of the block's 16 keys (zero past the last position).
struct KeysT {
    /// `[kv_heads][blocks][head_dim][LANES]`.
    data: Vec<f32>,
    /// The first block's first position.
    base: usize,
    /// Blocks per key/value head.
    blocks: usize,
    /// Values per block.
    block_len: usize,
}

impl KeysT {
    /// Transposes the keys of positions `lowest..end` (and those before `lowest` in its block).
    fn new<T: CacheValue>(shape: &CausalShape, keys: &[T], lowest: usize, end: usize) -> Self {
        let d = shape.head_dim;
        let kv_w = shape.kv_heads * d;
        let base = lowest / LANES * LANES;
        let blocks = (end - base).div_ceil(LANES);
        let block_len = d * LANES;
        let mut data = vec![0.0f32; shape.kv_heads * blocks * block_len];
        for (kv, head) in data.chunks_exact_mut(blocks * block_len).enumerate() {
            for (b, block) in head.chunks_exact_mut(block_len).enumerate() {
                let p0 = base + b * LANES;
                let count = (end - p0).min(LANES);
                let at = p0 * kv_w + kv * d;
                if count == LANES {
                    let span = &keys[at..at + (LANES - 1) * kv_w + d];
                    // SAFETY: `applies` saw AVX-512F; `span` holds 16 keys `kv_w` apart of `d`
                    // values, `d` a multiple of 16, and `block` `d · 16` values.
                    unsafe { transpose_block(span, kv_w, d, block) };
                } else {
                    for i in 0..count {
                        let key = &keys[at + i * kv_w..at + i * kv_w + d];
                        for (j, &v) in key.iter().enumerate() {
                            block[j * LANES + i] = v.to_f32();
                        }
                    }
                }
            }
        }
        KeysT {
            data,
            base,
            blocks,
            block_len,
        }
    }

    /// Block `b` (counted from position 0) of key/value head `kv`.
    ///
    /// # Panics
    /// If the block was not transposed.
    fn block(&self, kv: usize, b: usize) -> &[f32] {
        let rel = b
            .checked_sub(self.base / LANES)
            .filter(|&rel| rel < self.blocks)
            .expect("a transposed block");
        let at = (kv * self.blocks + rel) * self.block_len;
        &self.data[at..at + self.block_len]
    }
}

/// Writes the 16 keys `span[p · stride ..][..d]` transposed into `block` (`d` registers of 16).
///
/// # Safety
/// The CPU must have AVX-512F; `d` is a multiple of 16, `span` holds `15 · stride + d` values
/// and `block` `16 · d` (both checked).
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block<T: CacheValue>(span: &[T], stride: usize, d: usize, block: &mut [f32]) {
    let need = (LANES - 1)
        .checked_mul(stride)
        .and_then(|s| s.checked_add(d));
    assert!(d.is_multiple_of(LANES) && need.is_some_and(|need| span.len() >= need));
    assert!(block.len() >= LANES * d);
    for c in (0..d).step_by(LANES) {
        // SAFETY: key `p < 16` reads values `c..c + 16` of its `d`, inside `span`; the stores
        // write `block[(c + j) · 16 ..][..16]`, `c + j < d`, inside `block` (checked above).
        unsafe {
            let mut r = [_mm512_setzero_ps(); LANES];
            for (p, r) in r.iter_mut().enumerate() {
                *r = super::avx512::load16(span.as_ptr().add(p * stride + c));
            }
            let t = super::avx512::transpose16(r);
            for (j, t) in t.iter().enumerate() {
                _mm512_storeu_ps(block.as_mut_ptr().add((c + j) * LANES), *t);
            }
        }
    }
}

/// Attention of the chunk `i` of [`ROWS`] new rows (rows `ROWS · i ..` of the call, whose
/// outputs `out` holds) over the transposed keys and the values.
///
/// # Safety
/// The CPU must have AVX-512 F/BW, AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn attend_rows<T: CacheValue>(
    shape: &CausalShape,
    kt: &KeysT,
    queries: &[f32],
    q_stride: usize,
    values: &[T],
    start: usize,
    i: usize,
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let q_w = shape.heads * d;
    let group = shape.heads / shape.kv_heads;
    let rows = out.len() / q_w;
    let r0 = ROWS * i;
    let pos: [usize; ROWS] = std::array::from_fn(|r| start + r0 + r.min(rows - 1));
    let first = pos.map(|p| first_visible(shape, p));
    let n: [usize; ROWS] = std::array::from_fn(|r| pos[r] + 1 - first[r]);
    let q: [&[f32]; ROWS] = std::array::from_fn(|r| {
        let at = (r0 + r.min(rows - 1)) * q_stride;
        &queries[at..at + q_w]
    });
    // Row `r`'s scores: row `h` holds query head `kv · group + h`'s, as `finish` takes them.
    let mut probs: [Vec<f32>; ROWS] = std::array::from_fn(|r| vec![0.0f32; group * n[r]]);
    for kv in 0..shape.kv_heads {
        for h0 in (0..group).step_by(HEADS) {
            // Query head `kv · group + h0 + h` of row `r`.
            let head = |r: usize, h: usize| {
                let head = kv * group + h0 + h;
                &q[r][head * d..(head + 1) * d]
            };
            let span = Span {
                kv,
                h0,
                first,
                pos,
                n,
            };
            // Once per head group and row pair: `from_fn` is not on the per-block path.
            macro_rules! score {
                ($h:literal) => {{
                    let qs: [[&[f32]; $h]; ROWS] =
                        std::array::from_fn(|r| std::array::from_fn(|h| head(r, h)));
                    score_heads::<$h>(kt, &span, qs, shape.scale, &mut probs)
                }};
            }
            match HEADS.min(group - h0) {
                1 => score!(1),
                2 => score!(2),
                3 => score!(3),
                _ => score!(4),
            }
        }
        for (r, o) in out.chunks_mut(q_w).enumerate() {
            finish(shape, &mut probs[r], n[r], values, first[r], kv, o);
        }
    }
}

/// Which scores a [`score_heads`] call forms: query heads `h0..` of key/value head `kv`, for
/// rows at `pos` that see `n` positions from `first`.
struct Span {
    /// The key/value head.
    kv: usize,
    /// The first query head of the call, counted within the key/value head's group.
    h0: usize,
    /// Each row's first visible position.
    first: [usize; ROWS],
    /// Each row's position.
    pos: [usize; ROWS],
    /// Each row's visible positions.
    n: [usize; ROWS],
}

/// The scores of the `H` query heads `qs[r]` of each row over every block either row sees,
/// into `probs[r]` (row `span.h0 + h` of `n[r]` scores, as [`finish`] takes them).
#[inline]
#[target_feature(enable = "avx512f")]
fn score_heads<const H: usize>(
    kt: &KeysT,
    span: &Span,
    qs: [[&[f32]; H]; ROWS],
    scale: f32,
    probs: &mut [Vec<f32>; ROWS],
) {
    let Span {
        kv,
        h0,
        first,
        pos,
        n,
    } = *span;
    // Written in full for heads below `H` by every `scores_t` call.
    let mut s = [[[0.0f32; LANES]; HEADS]; ROWS];
    for b in first[0] / LANES..=pos[ROWS - 1] / LANES {
        scores_t::<H>(&qs, kt.block(kv, b), scale, &mut s);
        let p0 = b * LANES;
        for r in 0..ROWS {
            // The block's positions this row sees.
            let (lo, hi) = (p0.max(first[r]), (p0 + LANES).min(pos[r] + 1));
            if lo >= hi {
                continue;
            }
            for (h, s) in s[r][..H].iter().enumerate() {
                let at = (h0 + h) * n[r] + lo - first[r];
                let dst = &mut probs[r][at..at + hi - lo];
                // A whole block (most of them) as one fixed-size copy, not a `memcpy` call.
                if let Ok(dst) = <&mut [f32; LANES]>::try_from(&mut *dst) {
                    *dst = *s;
                } else {
                    dst.copy_from_slice(&s[lo - p0..hi - p0]);
                }
            }
        }
    }
}

/// The scores of [`ROWS`] rows' `H` query heads `q[r][h]` (`d` values each) against the 16
/// keys of a transposed `block`, times `scale`, into `out[r][h]`: bit-identical to
/// [`super::score`]` · scale` of each key (value `j` of every 16-value chunk summed in order
/// from zero, then those 16 sums in order).
///
/// # Panics
/// If a query is not `d = block.len() / 16` values, `d` is not a multiple of 16, or `H` is
/// above [`HEADS`].
#[inline]
#[target_feature(enable = "avx512f")]
fn scores_t<const H: usize>(
    q: &[[&[f32]; H]; ROWS],
    block: &[f32],
    scale: f32,
    out: &mut [[[f32; LANES]; HEADS]; ROWS],
) {
    let d = block.len() / LANES;
    assert!(d.is_multiple_of(LANES) && H <= HEADS);
    let k = block.as_ptr();
    // Plain loops: generic helpers such as `array::from_fn` may stay calls here.
    let mut qp = [[std::ptr::null::<f32>(); H]; ROWS];
    for r in 0..ROWS {
        for h in 0..H {
            assert!(q[r][h].len() == d, "query width");
            qp[r][h] = q[r][h].as_ptr();
        }
    }
    // SAFETY: the loads read `block[(c + j) · 16 ..][..16]` and `q[r][h][c + j]` for
    // `c + j < d`, inside the slices (checked above); the stores write `out`'s arrays.
    unsafe {
        // Lane sums `j` of every query, one register of 16 keys each (a macro: the code stays
        // in this function's body, unrolled over the rows and heads).
        macro_rules! sums {
            ($j:expr) => {{
                let j = $j;
                let mut acc = [[_mm512_setzero_ps(); H]; ROWS];
                for c in (0..d).step_by(LANES) {
                    let kj = _mm512_loadu_ps(k.add((c + j) * LANES));
                    for r in 0..ROWS {
                        for h in 0..H {
                            let qj = _mm512_set1_ps(*qp[r][h].add(c + j));
                            acc[r][h] = _mm512_add_ps(acc[r][h], _mm512_mul_ps(qj, kj));
                        }
                    }
                }
                acc
            }};
        }
        let mut total = sums!(0);
        for j in 1..LANES {
            let acc = sums!(j);
            for r in 0..ROWS {
                for h in 0..H {
                    total[r][h] = _mm512_add_ps(total[r][h], acc[r][h]);
                }
            }
        }
        let scale = _mm512_set1_ps(scale);
        for r in 0..ROWS {
            for h in 0..H {
                _mm512_storeu_ps(out[r][h].as_mut_ptr(), _mm512_mul_ps(total[r][h], scale));
            }
        }
    }
}
