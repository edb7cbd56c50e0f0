//! AVX-512 VNNI kernels for Q4_1 and Q8_0 weights: `vpdpbusd` multiplies unsigned by signed
//! bytes and sums each four products into a 32-bit lane in one instruction (the AVX2 kernels
//! need `vpmaddubsw` + `vpmaddwd`), the f16 scales are converted by F16C, and one weight
//! block, unpacked once, is multiplied with up to four activation rows: batched decoding
//! reads each weight once for all the sequences of a step.
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
