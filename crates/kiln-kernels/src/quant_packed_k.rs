//! The packed layout of Q4_K and Q6_K matrices: [`crate::quant_packed`]'s 16 interleaved output
//! columns, for 256-value super-blocks with integer sub-block scales.
//!
//! A group's super-block holds the 16 columns' super-blocks in as many bytes as ggml's:
//!
//! * Q4_K (2304 bytes): the 16 f16 scales `d`, the 16 f16 minimum scales `dmin`, then 35
//!   64-byte vectors whose 4-byte lane `c` is column `c`'s ggml word `w` (bytes `4 + 4w ..`):
//!   words 0-2 are the packed 6-bit sub-block scales and minimums, words 3-34 the nibbles. So
//!   the nibble vector `8p + j` holds, in lane `c`, values `4j..4j+4` of sub-block `2p` (low
//!   nibbles) and of sub-block `2p + 1` (high nibbles), and one shift-and-mask decodes the
//!   scales of 16 columns at once.
//! * Q6_K (3360 bytes): the 16 f16 scales, then per 16-value sub-block `t` the 16 columns'
//!   signed 8-bit scales (byte `32 + 16t + c`), then 32 vectors of low nibbles (vector
//!   `4p + j`, lane `c`: values `4j..4j+4` of sub-block `2p` low, of sub-block `2p + 1` high),
//!   then 16 vectors of high bits (vector `t`, lane `c`, byte `i`: bits `2k, 2k + 1` are the
//!   top bits of value `4k + i` of sub-block `t`). Values are stored plus 32, as ggml does.
//!
//! The kernels compute, per column and input row, ggml's sums: the exact integer
//! `Σ_s scale_s · Σ q_w q_x` of a super-block (for Q4_K, `Σ_s min_s · Σ_s q_x` apart), then
//! `acc = fma(d_w · d_x, isum, acc)` (and `acc = fma(-(dmin_w · d_x), msum, acc)`). The plain
//! [`group_dots`] and the VNNI kernel give the same bits.

use crate::quant::{half_to_f32, QuantFormat};
use crate::quant_blocks::{q4_k_scales_mins, q6_k_values, K_BLOCK};
use crate::quant_packed::{PackedRow, GROUP};

/// Bytes of one group's super-block.
fn group_block_bytes(format: QuantFormat) -> usize {
    GROUP * format.block_bytes()
}

/// Where Q6_K's low-nibble vectors start in a group's super-block.
const Q6_LOW: usize = 32 + 16 * GROUP;
/// Where Q6_K's high-bit vectors start.
const Q6_HIGH: usize = Q6_LOW + 32 * 64;

/// Writes column `c`'s ggml super-block `blk` into the group's super-block `dst`.
pub(crate) fn put_column(format: QuantFormat, blk: &[u8], c: usize, dst: &mut [u8]) {
    match format {
        QuantFormat::Q4K => {
            dst[2 * c..2 * c + 2].copy_from_slice(&blk[0..2]);
            dst[32 + 2 * c..34 + 2 * c].copy_from_slice(&blk[2..4]);
            for w in 0..35 {
                dst[64 + 64 * w + 4 * c..][..4].copy_from_slice(&blk[4 + 4 * w..8 + 4 * w]);
            }
        }
        QuantFormat::Q6K => {
            dst[2 * c..2 * c + 2].copy_from_slice(&blk[208..210]);
            for t in 0..16 {
                dst[32 + 16 * t + c] = blk[192 + t];
            }
            let (v, _) = q6_k_values(blk);
            let q = |i: usize| (v[i] + 32) as u8;
            for p in 0..8 {
                for j in 0..4 {
                    for i in 0..4 {
                        let at = 32 * p + 4 * j + i;
                        dst[Q6_LOW + 64 * (4 * p + j) + 4 * c + i] =
                            (q(at) & 0x0f) | (q(at + 16) & 0x0f) << 4;
                    }
                }
            }
            for t in 0..16 {
                for i in 0..4 {
                    dst[Q6_HIGH + 64 * t + 4 * c + i] =
                        (0..4).fold(0, |b, k| b | (q(16 * t + 4 * k + i) >> 4) << (2 * k));
                }
            }
        }
        other => unreachable!("{other:?} is not a K format"),
    }
}

/// Reads column `c`'s ggml super-block out of the group's super-block `src` into `blk`.
pub(crate) fn take_column(format: QuantFormat, src: &[u8], c: usize, blk: &mut [u8]) {
    match format {
        QuantFormat::Q4K => {
            blk[0..2].copy_from_slice(&src[2 * c..2 * c + 2]);
            blk[2..4].copy_from_slice(&src[32 + 2 * c..34 + 2 * c]);
            for w in 0..35 {
                blk[4 + 4 * w..8 + 4 * w].copy_from_slice(&src[64 + 64 * w + 4 * c..][..4]);
            }
        }
        QuantFormat::Q6K => {
            blk[208..210].copy_from_slice(&src[2 * c..2 * c + 2]);
            for t in 0..16 {
                blk[192 + t] = src[32 + 16 * t + c];
            }
            // The 256 stored values (plus 32), then ggml's arrangement of their bits.
            let mut q = [0u8; K_BLOCK];
            for (i, q) in q.iter_mut().enumerate() {
                let (t, k, l) = (i / 16, (i % 16) / 4, i % 4);
                let (p, j, high) = (i / 32, (i % 16) / 4, (i / 16) % 2 == 1);
                let byte = src[Q6_LOW + 64 * (4 * p + j) + 4 * c + l];
                let nibble = if high { byte >> 4 } else { byte & 0x0f };
                let top = (src[Q6_HIGH + 64 * t + 4 * c + l] >> (2 * k)) & 3;
                *q = nibble | top << 4;
            }
            for half in 0..2 {
                let q = &q[128 * half..];
                for l in 0..32 {
                    blk[64 * half + l] = (q[l] & 0x0f) | (q[l + 64] & 0x0f) << 4;
                    blk[64 * half + l + 32] = (q[l + 32] & 0x0f) | (q[l + 96] & 0x0f) << 4;
                    blk[128 + 32 * half + l] = (q[l] >> 4)
                        | (q[l + 32] >> 4) << 2
                        | (q[l + 64] >> 4) << 4
                        | (q[l + 96] >> 4) << 6;
                }
            }
        }
        other => unreachable!("{other:?} is not a K format"),
    }
}

/// The 16 outputs of one group for each of `rows` (plain code, the VNNI kernel's arithmetic):
/// rows of Q8_K activations, `d` per super-block and `sum` per 16 values.
pub(crate) fn group_dots(
    format: QuantFormat,
    group: &[u8],
    rows: &[PackedRow<'_>],
    out: &mut [[f32; GROUP]],
) {
    let mut blk = [0u8; 210];
    let blk = &mut blk[..format.block_bytes()];
    for (row, out) in rows.iter().zip(out.iter_mut()) {
        let mut acc = [0.0f32; GROUP];
        for (b, src) in group.chunks_exact(group_block_bytes(format)).enumerate() {
            let x = &row.q[b * K_BLOCK..(b + 1) * K_BLOCK];
            let sums = &row.sum[b * 16..(b + 1) * 16];
            let dx = row.d[b];
            for (c, acc) in acc.iter_mut().enumerate() {
                take_column(format, src, c, blk);
                if format == QuantFormat::Q4K {
                    let (d, dmin) = (half_at(blk, 0), half_at(blk, 2));
                    let (sc, m) = q4_k_scales_mins(blk[4..16].try_into().expect("12 bytes"));
                    let (mut isum, mut msum) = (0i32, 0i32);
                    for s in 0..8 {
                        let (chunk, high) = (s / 2, s % 2 == 1);
                        let p: i32 = (0..32)
                            .map(|l| {
                                let byte = blk[16 + 32 * chunk + l];
                                let w = if high { byte >> 4 } else { byte & 0x0f };
                                w as i32 * x[32 * s + l] as i32
                            })
                            .sum();
                        isum += sc[s] as i32 * p;
                        msum += m[s] as i32 * (sums[2 * s] + sums[2 * s + 1]);
                    }
                    *acc = (d * dx).mul_add(isum as f32, *acc);
                    *acc = (-(dmin * dx)).mul_add(msum as f32, *acc);
                } else {
                    let (v, sc) = q6_k_values(blk);
                    let isum: i32 = (0..16)
                        .map(|t| {
                            let p: i32 = (16 * t..16 * t + 16)
                                .map(|i| v[i] as i32 * x[i] as i32)
                                .sum();
                            sc[t] as i32 * p
                        })
                        .sum();
                    *acc = (half_at(blk, 208) * dx).mul_add(isum as f32, *acc);
                }
            }
        }
        *out = acc;
    }
}

/// The f16 at byte `at` of `b`, as `f32`.
fn half_at(b: &[u8], at: usize) -> f32 {
    half_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// `out[rows, 16]` of one packed group for up to [`crate::quant_packed::TILE`] rows of Q8_K
/// activations, with the best kernel.
pub(crate) fn group_tile(
    format: QuantFormat,
    group: &[u8],
    rows: &[PackedRow<'_>],
    out: &mut [[f32; GROUP]],
) {
    let blocks = group.len() / group_block_bytes(format);
    for r in rows {
        assert!(r.d.len() >= blocks && r.sum.len() >= 16 * blocks);
        assert!(r.q.len() >= blocks * K_BLOCK);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx512_vnni() {
        macro_rules! run {
            ($kernel:ident, $n:literal) => {{
                let tile: &[PackedRow<'_>; $n] = rows.try_into().expect("the tile's rows");
                let out: &mut [[f32; GROUP]; $n] =
                    (&mut out[..$n]).try_into().expect("one output per row");
                // SAFETY: has_avx512_vnni() checked the features the kernel enables; every row
                // holds the scales, sums and values of the group's `blocks` super-blocks
                // (asserted above), and the group is whole super-blocks of `16 · block_bytes`.
                unsafe { vnni::$kernel::<$n>(group, tile, out) };
            }};
        }
        macro_rules! rows {
            ($kernel:ident) => {
                match rows.len() {
                    8 => run!($kernel, 8),
                    7 => run!($kernel, 7),
                    6 => run!($kernel, 6),
                    5 => run!($kernel, 5),
                    4 => run!($kernel, 4),
                    3 => run!($kernel, 3),
                    2 => run!($kernel, 2),
                    1 => run!($kernel, 1),
                    _ => unreachable!("at most TILE rows"),
                }
            };
        }
        match format {
            QuantFormat::Q4K => rows!(q4_k),
            QuantFormat::Q6K => rows!(q6_k),
            other => unreachable!("{other:?} is not a K format"),
        }
        return;
    }
    group_dots(format, group, rows, out);
}

/// The AVX-512 VNNI kernels.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{PackedRow, GROUP, Q6_HIGH, Q6_LOW};
    use crate::quant_blocks::K_BLOCK;
    use crate::quant_packed::vnni::{fetch_plan, prefetch};
    use std::arch::x86_64::*;

    /// The 16 outputs of one Q4_K group for `R` rows.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VNNI, FMA and F16C; `group` is whole 2304-byte group
    /// super-blocks and every row holds `blocks` scales, `16 · blocks` sums and `256 · blocks`
    /// values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q4_k<const R: usize>(
        group: &[u8],
        rows: &[PackedRow<'_>; R],
        out: &mut [[f32; GROUP]; R],
    ) {
        let blocks = group.len() / 2304;
        // SAFETY: super-block `b < blocks` spans `group[2304 b .. 2304 (b + 1)]`: 64 bytes of
        // f16 scales, then 35 64-byte vectors, all inside it; row reads are
        // `q[256 b .. 256 b + 256]`, `sum[16 b .. 16 b + 16]` and `d[b]`, which the caller
        // guarantees exist; each store writes one row's `[f32; GROUP]` (16 values) of `out`;
        // the features are the caller's duty.
        unsafe {
            let nibble = _mm512_set1_epi8(0x0f);
            let (low6, low4, low2) = (
                _mm512_set1_epi32(0x3f3f_3f3f),
                _mm512_set1_epi32(0x0f0f_0f0f),
                _mm512_set1_epi32(0x0303_0303),
            );
            let byte = _mm512_set1_epi32(0xff);
            let mut acc = [_mm512_setzero_ps(); R];
            let fetch = fetch_plan(R);
            for b in 0..blocks {
                let blk = group.as_ptr().add(b * 2304);
                if let Some(target) = fetch {
                    prefetch(blk, 2304, target);
                }
                // Vector `i` after the scales (no closure: it would not inherit the features).
                macro_rules! vec {
                    ($i:expr) => {
                        _mm512_loadu_si512(blk.add(64 + 64 * ($i)) as *const __m512i)
                    };
                }
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
                // ggml's 6-bit scales and minimums, four sub-blocks a word (as
                // `q4_k_scales_mins`, in every lane).
                let (s0, s1, s2) = (vec![0], vec![1], vec![2]);
                let scales = [
                    _mm512_and_si512(s0, low6),
                    _mm512_or_si512(
                        _mm512_and_si512(s2, low4),
                        _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(s0), low2)),
                    ),
                ];
                let mins = [
                    _mm512_and_si512(s1, low6),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi32::<4>(s2), low4),
                        _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(s1), low2)),
                    ),
                ];
                let mut isum = [_mm512_setzero_si512(); R];
                for s in 0..8 {
                    let shift = _mm_cvtsi32_si128(8 * (s as i32 % 4));
                    let sc = _mm512_and_si512(_mm512_srl_epi32(scales[s / 4], shift), byte);
                    let mut w = [_mm512_setzero_si512(); 8];
                    for (j, w) in w.iter_mut().enumerate() {
                        let raw = vec![3 + 8 * (s / 2) + j];
                        *w = if s % 2 == 0 {
                            _mm512_and_si512(raw, nibble)
                        } else {
                            _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble)
                        };
                    }
                    for (row, isum) in rows.iter().zip(&mut isum) {
                        let x = row.q.as_ptr().add(b * K_BLOCK + 32 * s) as *const i32;
                        let mut p = _mm512_setzero_si512();
                        for (j, w) in w.iter().enumerate() {
                            p = _mm512_dpbusd_epi32(
                                p,
                                *w,
                                _mm512_set1_epi32(x.add(j).read_unaligned()),
                            );
                        }
                        *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(p, sc));
                    }
                }
                // Minimums in 16-bit pairs of sub-blocks (2t, 2t + 1), against the rows'
                // pairs of 32-value sums: `vpdpwssd` multiplies and adds both.
                macro_rules! pair {
                    ($v:expr, $shift:literal) => {
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi32::<$shift>($v), byte),
                            _mm512_slli_epi32::<16>(_mm512_and_si512(
                                _mm512_srli_epi32::<{ $shift + 8 }>($v),
                                byte,
                            )),
                        )
                    };
                }
                let mp = [
                    pair!(mins[0], 0),
                    pair!(mins[0], 16),
                    pair!(mins[1], 0),
                    pair!(mins[1], 16),
                ];
                for ((row, isum), acc) in rows.iter().zip(isum).zip(&mut acc) {
                    let sums = row.sum.as_ptr().add(16 * b);
                    let mut msum = _mm512_setzero_si512();
                    for (t, m) in mp.iter().enumerate() {
                        let lo = *sums.add(4 * t) + *sums.add(4 * t + 1);
                        let hi = *sums.add(4 * t + 2) + *sums.add(4 * t + 3);
                        let xs = (lo as u16 as u32 | (hi as u32) << 16) as i32;
                        msum = _mm512_dpwssd_epi32(msum, *m, _mm512_set1_epi32(xs));
                    }
                    let dx = _mm512_set1_ps(*row.d.get_unchecked(b));
                    *acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum), *acc);
                    *acc =
                        _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(msum), *acc);
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                _mm512_storeu_ps(o.as_mut_ptr(), a);
            }
        }
    }

    /// The 16 outputs of one Q6_K group for `R` rows.
    ///
    /// # Safety
    /// As [`q4_k`], with 3360-byte group super-blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q6_k<const R: usize>(
        group: &[u8],
        rows: &[PackedRow<'_>; R],
        out: &mut [[f32; GROUP]; R],
    ) {
        let blocks = group.len() / 3360;
        // SAFETY: super-block `b < blocks` spans `group[3360 b .. 3360 (b + 1)]`: 32 bytes of
        // f16 scales, 256 of sub-block scales, 32 low-nibble and 16 high-bit 64-byte vectors,
        // all inside it (`Q6_HIGH + 16 · 64 = 3360`); row reads and stores as in `q4_k`.
        unsafe {
            let (m4, m30) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
            let mut acc = [_mm512_setzero_ps(); R];
            let fetch = fetch_plan(R);
            for b in 0..blocks {
                let blk = group.as_ptr().add(b * 3360);
                if let Some(target) = fetch {
                    prefetch(blk, 3360, target);
                }
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let mut isum = [_mm512_setzero_si512(); R];
                for t in 0..16 {
                    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(
                        blk.add(32 + 16 * t) as *const __m128i
                    ));
                    let top = _mm512_loadu_si512(blk.add(Q6_HIGH + 64 * t) as *const __m512i);
                    let tops = [
                        _mm512_slli_epi16::<4>(top),
                        _mm512_slli_epi16::<2>(top),
                        top,
                        _mm512_srli_epi16::<2>(top),
                    ];
                    let mut w = [_mm512_setzero_si512(); 4];
                    for (j, w) in w.iter_mut().enumerate() {
                        let raw = _mm512_loadu_si512(
                            blk.add(Q6_LOW + 64 * (4 * (t / 2) + j)) as *const __m512i
                        );
                        let low = if t % 2 == 0 {
                            _mm512_and_si512(raw, m4)
                        } else {
                            _mm512_and_si512(_mm512_srli_epi16::<4>(raw), m4)
                        };
                        *w = _mm512_or_si512(low, _mm512_and_si512(tops[j], m30));
                    }
                    for (row, isum) in rows.iter().zip(&mut isum) {
                        let x = row.q.as_ptr().add(b * K_BLOCK + 16 * t) as *const i32;
                        // The values are stored plus 32: start from -32 · Σx.
                        let mut p = _mm512_set1_epi32(-32 * *row.sum.get_unchecked(16 * b + t));
                        for (j, w) in w.iter().enumerate() {
                            p = _mm512_dpbusd_epi32(
                                p,
                                *w,
                                _mm512_set1_epi32(x.add(j).read_unaligned()),
                            );
                        }
                        *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(p, sc));
                    }
                }
                for ((row, isum), acc) in rows.iter().zip(isum).zip(&mut acc) {
                    let dx = _mm512_set1_ps(*row.d.get_unchecked(b));
                    *acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum), *acc);
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                _mm512_storeu_ps(o.as_mut_ptr(), a);
            }
        }
    }
}
