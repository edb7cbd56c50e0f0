//! wasm SIMD128 kernel for dense layers: `out = x · Wᵀ + b` on the transposed weight.
//!
//! A register block holds up to 4 input rows × 8 output columns (eight 4-lane accumulators)
//! while the shared dimension runs, so each loaded pair of weight vectors feeds four rows.

use core::arch::wasm32::*;

/// Output columns per register block (two 4-lane vectors).
const NR: usize = 8;
/// Input rows per register block.
const MR: usize = 4;

/// Computes `out[rows, n] = x[rows, k] · w_t[k, n] + bias`, overwriting `out`.
///
/// # Panics
/// If a slice is shorter than the dimensions say.
pub(super) fn forward(
    x: &[f32],
    rows: usize,
    k: usize,
    w_t: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(x.len() >= rows * k, "input length");
    assert!(w_t.len() >= k * n, "weight length");
    assert!(out.len() >= rows * n, "output length");
    assert!(bias.is_none_or(|b| b.len() >= n), "bias length");
    let mut r = 0;
    while r < rows {
        let m = MR.min(rows - r);
        match m {
            4 => block::<4>(x, r, k, w_t, n, bias, out),
            3 => block::<3>(x, r, k, w_t, n, bias, out),
            2 => block::<2>(x, r, k, w_t, n, bias, out),
            _ => block::<1>(x, r, k, w_t, n, bias, out),
        }
        r += m;
    }
}

/// Rows `r0..r0 + M` of the output: full 8-column blocks in registers, the last `n % 8`
/// columns with scalar code.
#[inline(always)]
fn block<const M: usize>(
    x: &[f32],
    r0: usize,
    k: usize,
    w_t: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let full = n / NR * NR;
    let xp = x.as_ptr();
    let wp = w_t.as_ptr();
    let mut c = 0;
    while c < full {
        let (b0, b1) = match bias {
            // SAFETY: c + 8 <= full <= n <= bias.len() (asserted in `forward`).
            Some(b) => unsafe {
                (
                    v128_load(b.as_ptr().add(c) as *const v128),
                    v128_load(b.as_ptr().add(c + 4) as *const v128),
                )
            },
            None => (f32x4_splat(0.0), f32x4_splat(0.0)),
        };
        let mut acc = [[b0, b1]; M];
        for kk in 0..k {
            // SAFETY: kk < k and c + 8 <= n, so both loads lie inside w_t[kk * n .. kk * n + n],
            // within the k * n values `forward` asserted; v128_load accepts unaligned addresses.
            let (w0, w1) = unsafe {
                let p = wp.add(kk * n + c);
                (
                    v128_load(p as *const v128),
                    v128_load(p.add(4) as *const v128),
                )
            };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r0 + i < rows and kk < k, inside the rows * k values of `x`.
                let xv = f32x4_splat(unsafe { *xp.add((r0 + i) * k + kk) });
                a[0] = f32x4_add(a[0], f32x4_mul(xv, w0));
                a[1] = f32x4_add(a[1], f32x4_mul(xv, w1));
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let o = &mut out[(r0 + i) * n + c..(r0 + i) * n + c + NR];
            // SAFETY: `o` is a slice of exactly 8 values, so both 16-byte stores fit.
            unsafe {
                v128_store(o.as_mut_ptr() as *mut v128, a[0]);
                v128_store(o.as_mut_ptr().add(4) as *mut v128, a[1]);
            }
        }
        c += NR;
    }
    for i in 0..M {
        let row = &x[(r0 + i) * k..(r0 + i + 1) * k];
        for col in full..n {
            let mut acc = bias.map_or(0.0, |b| b[col]);
            for (kk, &v) in row.iter().enumerate() {
                acc += v * w_t[kk * n + col];
            }
            out[(r0 + i) * n + col] = acc;
        }
    }
}
