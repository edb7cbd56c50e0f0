//! The 8-bit quantization of layer inputs in AVX-512: Q8_0/Q8_1 blocks of 32 (two vectors a
//! block) and Q8_K blocks of 256. The compiler's vectorization of the plain loops moved single
//! values between registers; with 8 SmolLM2 streams that quantization was 6% of the server's
//! samples (perf, 2026-12-03). `cargo bench -p kiln-kernels --bench kernels`, one thread:
//! 8 rows of 1536 to Q8_1 15.8 → 4.4 µs, 8 rows of 2048 to Q8_K 38.4 → 6.1 µs.

use super::quant::{quantize_block, round_to_f16};
use std::arch::x86_64::*;

/// Values per block.
const BLOCK: usize = 32;

/// [`crate::quant::quantize_blocks`] with the same bits: blocks of finite values in whole
/// vectors, a block holding an infinity or a NaN through the plain per-block code (the vector
/// conversion would turn those into other integers than Rust's `as` does).
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `x` must be whole blocks, `q` as long as `x`, and `d`,
/// `s` and `sum` one value per block.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn quantize_blocks(
    x: &[f32],
    q: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    sum: &mut [i32],
) {
    let blocks = x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK));
    for ((((b, q), d), s), sum) in blocks.zip(d).zip(s).zip(sum) {
        // SAFETY: `b` and `q` hold 32 values each: two 16-value loads from `b`, two 16-byte
        // stores into `q`.
        unsafe {
            let v0 = _mm512_loadu_ps(b.as_ptr());
            let v1 = _mm512_loadu_ps(b.as_ptr().add(16));
            // x - x is 0 for a finite x and NaN for an infinity or a NaN.
            let finite =
                _mm512_cmp_ps_mask::<_CMP_ORD_Q>(_mm512_sub_ps(v0, v0), _mm512_sub_ps(v1, v1));
            if finite != 0xffff {
                (*d, *s, *sum) = quantize_block(b, q);
                continue;
            }
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let scale = amax / 127.0;
            let id = _mm512_set1_ps(crate::quant::inverse_scale(amax));
            // Round half to even (the rounding mode is named, not read from MXCSR).
            const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let r0 = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(v0, id));
            let r1 = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(v1, id));
            // |r| <= 127, so keeping the low byte is the `as i8` cast.
            _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(r0));
            _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(r1));
            let total = _mm512_reduce_add_epi32(_mm512_add_epi32(r0, r1));
            *d = round_to_f16(scale);
            *s = round_to_f16(scale * total as f32);
            *sum = total;
        }
    }
}

/// [`crate::quant_blocks::quantize_row_q8_k`]'s work for one 256-value block, with the same
/// bits as the plain code: the first value of largest magnitude maps to -127, every 16 values
/// are summed. A block holding an infinity or a NaN goes through the plain code.
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `b` and `q` must hold 256 values and `bsums` 16.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn quantize_block_q8_k(b: &[f32], q: &mut [i8], bsums: &mut [i32]) -> f32 {
    // SAFETY: `b` and `q` hold 256 values and `bsums` 16: the loads, stores and writes below
    // stay within them (16 vectors of 16).
    unsafe {
        let at = |i: usize| _mm512_loadu_ps(b.as_ptr().add(16 * i));
        let (mut acc, mut finite) = (_mm512_setzero_ps(), 0xffffu16);
        for i in 0..16 {
            let v = at(i);
            let e = _mm512_sub_ps(v, v);
            finite &= _mm512_cmp_ps_mask::<_CMP_ORD_Q>(e, e);
            acc = _mm512_max_ps(_mm512_abs_ps(v), acc);
        }
        if finite != 0xffff {
            return crate::quant_blocks::quantize_block_q8_k_plain(b, q, bsums);
        }
        let amax = _mm512_reduce_max_ps(acc);
        // The first value of that magnitude, with its sign (none for a block of zeros).
        let wanted = _mm512_set1_ps(amax);
        let mut max = 0.0;
        if amax != 0.0 {
            for i in 0..16 {
                let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(at(i)), wanted);
                if hit != 0 {
                    max = b[16 * i + hit.trailing_zeros() as usize];
                    break;
                }
            }
        }
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            // As the plain code: all zeros, or too small for the scale's inverse.
            q.fill(0);
            bsums.fill(0);
            return 0.0;
        }
        let scale = _mm512_set1_ps(iscale);
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        for (i, s) in bsums.iter_mut().enumerate() {
            let r = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(at(i), scale));
            _mm_storeu_si128(q.as_mut_ptr().add(16 * i).cast(), _mm512_cvtepi32_epi8(r));
            *s = _mm512_reduce_add_epi32(r);
        }
        1.0 / iscale
    }
}

#[cfg(test)]
mod tests {
    use crate::quant::quantize_blocks_plain;
    use crate::quant_blocks::quantize_block_q8_k_plain;

    fn avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }

    /// Blocks of every kind the kernels must agree on: random magnitudes from 1e-8 to 1e6,
    /// values whose scaled form is a tie, all zeros, a largest magnitude held by both signs,
    /// infinities and NaNs, and values so small that `127 / max` overflows.
    fn cases(len: usize) -> Vec<Vec<f32>> {
        let mut seed = 0x9e37_79b9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut out = Vec::new();
        for case in 0..300 {
            let mut x: Vec<f32> = (0..len)
                .map(|_| ((next() % 20001) as f32 - 10000.0) * 10f32.powi(case % 11 - 8))
                .collect();
            match case % 10 {
                0 => x.fill(0.0),
                1 => {
                    // 127 sets the scale to 1: the half-integers below are ties.
                    x[0] = 127.0;
                    for (i, v) in x.iter_mut().enumerate().skip(1) {
                        *v = (i % 64) as f32 - 31.5;
                    }
                }
                2 => {
                    let (i, j) = (next() as usize % len, next() as usize % len);
                    x[i] = 1e6;
                    x[j] = -1e6;
                }
                3 => x[next() as usize % len] = f32::INFINITY,
                4 => x[next() as usize % len] = f32::NAN,
                5 => x[next() as usize % len] = f32::NEG_INFINITY,
                6 => {
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = if i % 3 == 0 {
                            0.0
                        } else {
                            (i as f32 - 100.0) * 1e-40
                        };
                    }
                }
                _ => {}
            }
            out.push(x);
        }
        out
    }

    #[test]
    fn q8_blocks_equal_the_plain_code_bit_for_bit() {
        if !avx512() {
            eprintln!("no AVX-512 F/BW on this CPU: the kernel cannot run here");
            return;
        }
        for (c, x) in cases(32 * 7).iter().enumerate() {
            let n = x.len() / 32;
            let mut want = (vec![0i8; x.len()], vec![0.0; n], vec![0.0; n], vec![0; n]);
            let mut got = (vec![1i8; x.len()], vec![1.0; n], vec![1.0; n], vec![1; n]);
            quantize_blocks_plain(x, &mut want.0, &mut want.1, &mut want.2, &mut want.3);
            // SAFETY: the CPU has AVX-512 F and BW (checked above); the lengths match.
            unsafe { super::quantize_blocks(x, &mut got.0, &mut got.1, &mut got.2, &mut got.3) };
            assert_eq!(got.0, want.0, "case {c}: values");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.1), bits(&want.1), "case {c}: scales");
            assert_eq!(bits(&got.2), bits(&want.2), "case {c}: d·Σq");
            assert_eq!(got.3, want.3, "case {c}: sums");
        }
    }

    #[test]
    fn q8_k_blocks_equal_the_plain_code_bit_for_bit() {
        if !avx512() {
            eprintln!("no AVX-512 F/BW on this CPU: the kernel cannot run here");
            return;
        }
        for (c, x) in cases(256).iter().enumerate() {
            let (mut wq, mut ws) = (vec![0i8; 256], vec![0; 16]);
            let (mut gq, mut gs) = (vec![1i8; 256], vec![1; 16]);
            let want = quantize_block_q8_k_plain(x, &mut wq, &mut ws);
            // SAFETY: the CPU has AVX-512 F and BW (checked above); the lengths match.
            let got = unsafe { super::quantize_block_q8_k(x, &mut gq, &mut gs) };
            assert_eq!(got.to_bits(), want.to_bits(), "case {c}: scale");
            assert_eq!(gq, wq, "case {c}: values");
            assert_eq!(gs, ws, "case {c}: sums");
        }
    }
}
