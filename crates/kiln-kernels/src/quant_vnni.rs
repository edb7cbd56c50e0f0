//! AVX-512 VNNI kernels for the ggml row layout (Q4_1, Q5_0, Q8_0, Q4_K, Q6_K): `vpdpbusd`
//! multiplies unsigned by signed bytes and sums each four products into a 32-bit lane in one
//! instruction (the AVX2 kernels need `vpmaddubsw` + `vpmaddwd`), the f16 scales are converted
//! by F16C, and one weight block, unpacked once, is multiplied with up to eight activation
//! rows: batched decoding reads each weight once for all the sequences of a step. The K-quant
//! kernels, whose sub-blocks carry integer scales, use `vpmaddubsw` and then `vpdpwssd`, which
//! multiplies the 16-bit pair sums by the scales and accumulates them in one instruction.
//!
//! The integer block sums are exactly the AVX2 kernels' (no product pair can saturate: 4-bit
//! or |8-bit| weights times 7-bit activations), so the results differ from theirs only by the
//! order of the `f32` additions.

use std::arch::x86_64::*;

/// One row of Q8_0/Q8_1 activations: per-block scales, per-block `d · Σq` (Q8_1), values.
#[derive(Clone, Copy)]
pub(crate) struct RowRef<'a> {
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub q: &'a [i8],
}

/// The f16 scale (and minimum, for Q4_1) at the start of a block, as `f32`.
#[inline(always)]
unsafe fn scales(blk: *const u8) -> (f32, f32) {
    // SAFETY: the caller passes a pointer to at least 4 readable bytes (a Q4_1 block starts
    // with two f16; for a Q8_0 block the second pair is quantized data, unused), and F16C is
    // enabled by the calling function's target features.
    unsafe {
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((blk as *const i32).read_unaligned()));
        (
            _mm_cvtss_f32(dm),
            _mm_cvtss_f32(_mm_shuffle_ps::<1>(dm, dm)),
        )
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register arithmetic only; AVX is enabled by the calling function.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
}

/// Q4_1 weights `w` (`n` 20-byte blocks) against `R` rows of Q8_1 activations.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; every row must hold at least
/// `n` scales and sums and `32 n` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1<const R: usize>(w: &[u8], rows: [RowRef<'_>; R]) -> [f32; R] {
    let n = w.len() / 20;
    for r in &rows {
        assert!(r.d.len() >= n && r.s.len() >= n && r.q.len() >= 32 * n);
    }
    // SAFETY: every read is inside block `b < n` of `w` (20 bytes at `20 b`) or inside
    // `q[32 b .. 32 b + 32]` of a row, both checked above; the features are the caller's duty.
    unsafe {
        let mask = _mm_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut summs = [0.0f32; R];
        for b in 0..n {
            let blk = w.as_ptr().add(b * 20);
            let (dw, mw) = scales(blk);
            let raw = _mm_loadu_si128(blk.add(4) as *const __m128i);
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
            let qw = _mm256_set_m128i(hi, lo);
            for (r, row) in rows.iter().enumerate() {
                let qx = _mm256_loadu_si256(row.q.as_ptr().add(b * 32) as *const __m256i);
                let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qw, qx);
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * *row.d.get_unchecked(b)),
                    _mm256_cvtepi32_ps(p),
                    acc[r],
                );
                summs[r] += mw * *row.s.get_unchecked(b);
            }
        }
        std::array::from_fn(|r| hsum(acc[r]) + summs[r])
    }
}

/// Q8_0 weights `w` (`n` 34-byte blocks) against `R` rows of Q8_0 activations.
///
/// # Safety
/// As [`dot_q4_1`], with 34-byte blocks (the sums are not read).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0<const R: usize>(w: &[u8], rows: [RowRef<'_>; R]) -> [f32; R] {
    let n = w.len() / 34;
    for r in &rows {
        assert!(r.d.len() >= n && r.q.len() >= 32 * n);
    }
    // SAFETY: reads stay inside block `b < n` of `w` (34 bytes at `34 b`) and inside
    // `q[32 b .. 32 b + 32]` of each row, checked above; the features are the caller's duty.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..n {
            let blk = w.as_ptr().add(b * 34);
            let (dw, _) = scales(blk);
            let qw = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            // |w| as unsigned bytes times x with w's sign: the signed product.
            let abs_w = _mm256_sign_epi8(qw, qw);
            for (r, row) in rows.iter().enumerate() {
                let qx = _mm256_loadu_si256(row.q.as_ptr().add(b * 32) as *const __m256i);
                let p =
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, _mm256_sign_epi8(qx, qw));
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * *row.d.get_unchecked(b)),
                    _mm256_cvtepi32_ps(p),
                    acc[r],
                );
            }
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }
}

/// One row of Q8_K activations: per-256 scales, per-16 sums, values.
#[derive(Clone, Copy)]
pub(crate) struct KRowRef<'a> {
    pub d: &'a [f32],
    pub bsums: &'a [i32],
    pub q: &'a [i8],
}

/// Q5_0 weights `w` (`n` 22-byte blocks) against `R` rows of Q8_0 activations.
///
/// # Safety
/// As [`dot_q4_1`], with 22-byte blocks (the sums are not read).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_0<const R: usize>(w: &[u8], rows: [RowRef<'_>; R]) -> [f32; R] {
    let n = w.len() / 22;
    for r in &rows {
        assert!(r.d.len() >= n && r.q.len() >= 32 * n);
    }
    // SAFETY: reads stay inside block `b < n` of `w` (22 bytes at `22 b`) and inside
    // `q[32 b .. 32 b + 32]` of each row, checked above; the features are the caller's duty.
    unsafe {
        let mask = _mm_set1_epi8(0x0f);
        let bit4 = _mm256_set1_epi8(0x10);
        let sixteen = _mm256_set1_epi8(16);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..n {
            let blk = w.as_ptr().add(b * 22);
            let (dw, _) = scales(blk);
            let qh = (blk.add(2) as *const u32).read_unaligned();
            let raw = _mm_loadu_si128(blk.add(6) as *const __m128i);
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
            // Bit i of `qh` is the fifth bit of value i.
            let high = _mm256_and_si256(_mm256_movm_epi8(qh), bit4);
            let qw = _mm256_sub_epi8(_mm256_or_si256(_mm256_set_m128i(hi, lo), high), sixteen);
            let abs_w = _mm256_sign_epi8(qw, qw);
            for (r, row) in rows.iter().enumerate() {
                let qx = _mm256_loadu_si256(row.q.as_ptr().add(b * 32) as *const __m256i);
                let p =
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, _mm256_sign_epi8(qx, qw));
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * *row.d.get_unchecked(b)),
                    _mm256_cvtepi32_ps(p),
                    acc[r],
                );
            }
        }
        std::array::from_fn(|r| hsum(acc[r]))
    }
}

/// Sum of the eight 32-bit lanes.
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    // SAFETY: register arithmetic only; AVX2 is enabled by the calling function.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Q4_K weights `w` (`n` 144-byte super-blocks) against `R` rows of Q8_K activations.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; every row must hold at least
/// `n` scales, `16 n` sums and `256 n` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k<const R: usize>(w: &[u8], rows: [KRowRef<'_>; R]) -> [f32; R] {
    let n = w.len() / 144;
    for r in &rows {
        assert!(r.d.len() >= n && r.bsums.len() >= 16 * n && r.q.len() >= 256 * n);
    }
    // SAFETY: reads stay inside super-block `b < n` of `w` (144 bytes at `144 b`) and inside
    // `q[256 b .. 256 b + 256]` of each row, checked above; the features are the caller's duty.
    unsafe {
        let mask = _mm256_set1_epi8(0x0f);
        let mut acc = [0.0f32; R];
        for b in 0..n {
            let blk = w.as_ptr().add(b * 144);
            let (d, dmin) = scales(blk);
            let (sc, mins) =
                crate::quant_blocks::q4_k_scales_mins(&*(blk.add(4) as *const [u8; 12]));
            let mut isum = [_mm256_setzero_si256(); R];
            for chunk in 0..4 {
                let raw = _mm256_loadu_si256(blk.add(16 + 32 * chunk) as *const __m256i);
                let lo = _mm256_and_si256(raw, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                let (s0, s1) = (
                    _mm256_set1_epi16(sc[2 * chunk] as i16),
                    _mm256_set1_epi16(sc[2 * chunk + 1] as i16),
                );
                for (r, row) in rows.iter().enumerate() {
                    let x = row.q.as_ptr().add(b * 256 + 64 * chunk);
                    let x0 = _mm256_loadu_si256(x as *const __m256i);
                    let x1 = _mm256_loadu_si256(x.add(32) as *const __m256i);
                    // Pairs of 4-bit × 8-bit products fit 16 bits (|15 · 128 · 2| < 2^15), so
                    // `vpmaddubsw` is exact, and `vpdpwssd` scales and accumulates them.
                    let p0 = _mm256_maddubs_epi16(lo, x0);
                    let p1 = _mm256_maddubs_epi16(hi, x1);
                    isum[r] = _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(isum[r], p0, s0), p1, s1);
                }
            }
            for (r, row) in rows.iter().enumerate() {
                let sums = &row.bsums[b * 16..b * 16 + 16];
                let msum: i32 = (0..8)
                    .map(|j| mins[j] as i32 * (sums[2 * j] + sums[2 * j + 1]))
                    .sum();
                let dx = *row.d.get_unchecked(b);
                acc[r] += d * dx * hsum_i32(isum[r]) as f32 - dmin * dx * msum as f32;
            }
        }
        acc
    }
}

/// Q6_K weights `w` (`n` 210-byte super-blocks) against `R` rows of Q8_K activations.
///
/// # Safety
/// As [`dot_q4_k`], with 210-byte super-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k<const R: usize>(w: &[u8], rows: [KRowRef<'_>; R]) -> [f32; R] {
    let n = w.len() / 210;
    for r in &rows {
        assert!(r.d.len() >= n && r.bsums.len() >= 16 * n && r.q.len() >= 256 * n);
    }
    // SAFETY: reads stay inside super-block `b < n` of `w` (210 bytes at `210 b`, the f16 scale
    // at byte 208) and inside `q[256 b .. 256 b + 256]` of each row, checked above.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0f);
        let m30 = _mm256_set1_epi8(0x30);
        let mut acc = [0.0f32; R];
        for b in 0..n {
            let blk = w.as_ptr().add(b * 210);
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                (blk.add(208) as *const u16).read_unaligned() as i32,
            )));
            // The 16 signed sub-block scales as 16-bit lanes.
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i));
            let mut isum = [_mm256_setzero_si256(); R];
            for half in 0..2 {
                let ql = blk.add(64 * half);
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * half) as *const __m256i);
                let a = _mm256_loadu_si256(ql as *const __m256i);
                let c = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                // Unsigned 6-bit values (the stored value + 32) of the four 32-value groups.
                let v = [
                    _mm256_or_si256(
                        _mm256_and_si256(a, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(c, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(a), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(c), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                    ),
                ];
                for (g, v) in v.iter().enumerate() {
                    // The 16-bit lanes 0-7 hold the group's first 16 values' pair sums, lanes
                    // 8-15 the next 16's: scales `j` and `j + 1`, picked out of `sc16`.
                    let j = (8 * half + 2 * g) as i16;
                    let pick = _mm256_set_m128i(_mm_set1_epi16(j + 1), _mm_set1_epi16(j));
                    let s = _mm256_permutexvar_epi16(pick, sc16);
                    for (r, row) in rows.iter().enumerate() {
                        let x = _mm256_loadu_si256(
                            row.q.as_ptr().add(b * 256 + 128 * half + 32 * g) as *const __m256i,
                        );
                        // Pairs of 6-bit × 8-bit products fit 16 bits (63 · 128 · 2 < 2^15).
                        let p = _mm256_maddubs_epi16(*v, x);
                        isum[r] = _mm256_dpwssd_epi32(isum[r], p, s);
                    }
                }
            }
            for (r, row) in rows.iter().enumerate() {
                // The stored values are offset by 32: subtract 32 · Σ scale · Σ x per 16.
                let sums = &row.bsums[b * 16..b * 16 + 16];
                let offset: i32 = (0..16)
                    .map(|j| *blk.add(192 + j) as i8 as i32 * sums[j])
                    .sum::<i32>()
                    * 32;
                acc[r] += d * *row.d.get_unchecked(b) * (hsum_i32(isum[r]) - offset) as f32;
            }
        }
        acc
    }
}
