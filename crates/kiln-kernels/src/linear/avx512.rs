//! AVX-512 micro-kernel for dense layers whose weights are packed in panels of 32 columns.
//!
//! A panel holds `k` rows of 32 consecutive output columns of `Wᵀ`, contiguous, so the kernel
//! streams it once per block of up to 12 input rows, keeping 24 accumulators in registers.

use std::arch::x86_64::*;

/// Output columns per packed panel (two 16-lane registers).
pub const PANEL: usize = 32;
/// Input rows per register block (24 accumulators of the 32 registers).
pub const MR: usize = 12;

/// Computes `out[r][0..cols] = bias[0..cols] + Σ_k x[r][k] · panel[k][0..cols]` for `M` rows.
///
/// # Safety
/// The CPU must support AVX-512F. `x` must be valid for reads of `M` rows of `k` values at
/// stride `ldx`; `panel` for `k * 32` values; `bias` for 32 values; `out` for writes of `M`
/// rows of `cols <= 32` values at stride `ldo`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // a micro-kernel takes raw pointers and strides
pub unsafe fn block<const M: usize>(
    x: *const f32,
    ldx: usize,
    k: usize,
    panel: *const f32,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    // SAFETY (whole body): every pointer offset below stays inside the ranges the caller
    // guarantees: rows r < M, kk < k, panel offsets < k * 32, bias offsets < 32, and stores
    // are masked to `cols` columns.
    unsafe {
        let mut lo = [_mm512_setzero_ps(); M];
        let mut hi = [_mm512_setzero_ps(); M];
        for kk in 0..k {
            let w_lo = _mm512_loadu_ps(panel.add(kk * PANEL));
            let w_hi = _mm512_loadu_ps(panel.add(kk * PANEL + 16));
            for r in 0..M {
                let xv = _mm512_set1_ps(*x.add(r * ldx + kk));
                lo[r] = _mm512_fmadd_ps(xv, w_lo, lo[r]);
                hi[r] = _mm512_fmadd_ps(xv, w_hi, hi[r]);
            }
        }
        let b_lo = _mm512_loadu_ps(bias);
        let b_hi = _mm512_loadu_ps(bias.add(16));
        let m_lo: __mmask16 = if cols >= 16 {
            0xFFFF
        } else {
            (1u16 << cols) - 1
        };
        let m_hi: __mmask16 = if cols >= 32 {
            0xFFFF
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for r in 0..M {
            let o = out.add(r * ldo);
            _mm512_mask_storeu_ps(o, m_lo, _mm512_add_ps(lo[r], b_lo));
            _mm512_mask_storeu_ps(o.add(16), m_hi, _mm512_add_ps(hi[r], b_hi));
        }
    }
}
