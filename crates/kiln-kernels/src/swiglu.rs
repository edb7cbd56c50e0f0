//! SwiGLU, `silu(gate) · up`, with the arithmetic of llama.cpp's CPU backend (ggml's
//! `ggml_vec_swiglu_f32`), so that kiln's decoders keep llama.cpp's bits.
//!
//! ggml computes `silu(x) = x / (1 + e^-x)` with a vectorized `e^x`: the approximation of Arm's
//! optimized-routines (a range reduction by `ln 2` in two parts, then a degree-5 polynomial; at
//! most about 1.5 ulp from the true value). Which code runs depends on how ggml was compiled:
//! 16 lanes in a build for AVX-512 F and DQ (finishing with `scalef`), 8 in a build for AVX2 and
//! FMA (finishing with exponent bits; the two round differently), and the C library's `expf`
//! for the values past the last whole vector. kiln picks the variant of a native ggml build on
//! the CPU it runs on, and does the same operations in the same order. On other CPUs (and on
//! wasm) it takes libm's `expf` for every value, where ggml's SSE2, NEON and other builds have
//! vector code of their own: the bits then differ from llama.cpp's by a few ulp.
//!
//! Checked: the AVX-512 variant against the `ggml_vec_swiglu_f32` of llama-cpp-python's own
//! AVX-512 build, every bit (`tests/swiglu_parity.rs`); each vector kernel against a plain
//! scalar statement of its variant ([`exp_avx512_way`], [`exp_avx2_way`]), bit for bit. Time
//! and parity figures: `bench/results/kernels-session9-2026-12-03.md`.

/// `x · log2(e)`'s factor, `0x1.715476p+0`.
const LOG2_E: f32 = f32::from_bits(0x3fb8_aa3b);
/// `1.5 · 2^23`: added and taken away, it rounds to an integer.
const SHIFT: f32 = f32::from_bits(0x4b40_0000);
/// `ln 2`, high part (`0x1.62e4p-1`).
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
/// `ln 2`, low part (`0x1.7f7d1cp-20`).
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// Polynomial coefficients of `b`, `b²` … `b⁵` (`0x1.ffffecp-1`, `0x1.fffdb6p-2`,
/// `0x1.555e66p-3`, `0x1.573e2ep-5`, `0x1.0e4020p-7`).
const C: [f32; 5] = [
    f32::from_bits(0x3f7f_fff6),
    f32::from_bits(0x3eff_fedb),
    f32::from_bits(0x3e2a_af33),
    f32::from_bits(0x3d2b_9f17),
    f32::from_bits(0x3c07_2010),
];

/// `out[i] = silu(gate[i]) · up[i]`, as a native llama.cpp build computes it on this CPU.
///
/// # Panics
/// If the three slices differ in length.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == up.len() && up.len() == out.len(),
        "swiglu lengths"
    );
    let done = vector_part(gate, up, out);
    for ((o, &g), &u) in out[done..].iter_mut().zip(&gate[done..]).zip(&up[done..]) {
        *o = silu_libm(g) * u;
    }
}

/// `silu(x)` with the C library's `expf` (Rust's libm on wasm), as ggml's scalar code has it.
#[inline]
pub fn silu_libm(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Which vector variant of ggml's `e^x` this CPU runs, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// 16 lanes, finishing with `scalef` (ggml built for AVX-512 F and DQ).
    Avx512,
    /// 8 lanes, finishing with exponent bits (ggml built for AVX2 and FMA).
    Avx2,
    /// No vector code: every value through the C library's `expf`.
    Libm,
}

/// The variant [`swiglu`] uses here: a native ggml build's on this CPU (it follows `KILN_SIMD`
/// like the other kernels).
pub fn variant() -> Variant {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::{simd_level, SimdLevel};
        match simd_level() {
            SimdLevel::Avx512 if std::arch::is_x86_feature_detected!("avx512dq") => {
                return Variant::Avx512
            }
            SimdLevel::Avx512 | SimdLevel::Avx2 => return Variant::Avx2,
            SimdLevel::Baseline => {}
        }
    }
    Variant::Libm
}

/// Runs the whole vectors of the CPU's variant; returns how many values it wrote.
fn vector_part(gate: &[f32], up: &[f32], out: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    match variant() {
        Variant::Avx512 => {
            let n = gate.len() / 16 * 16;
            // SAFETY: variant() returns Avx512 only when the CPU has AVX-512 F and DQ (and,
            // through simd_level, BW, AVX2 and FMA); the three slices hold `n` values each.
            unsafe { x86::swiglu_avx512(&gate[..n], &up[..n], &mut out[..n]) };
            return n;
        }
        Variant::Avx2 => {
            let n = gate.len() / 8 * 8;
            // SAFETY: variant() returns Avx2 only when the CPU has AVX2 and FMA; the three
            // slices hold `n` values each.
            unsafe { x86::swiglu_avx2(&gate[..n], &up[..n], &mut out[..n]) };
            return n;
        }
        Variant::Libm => {}
    }
    let _ = (gate, up, out);
    0
}

/// The range reduction both variants share: `(n, b)` with `x = n · ln 2 + b`, and `z`, whose
/// low mantissa bits hold `n`.
#[inline(always)]
fn reduce(x: f32) -> (f32, f32, f32) {
    let z = x.mul_add(LOG2_E, SHIFT);
    let n = z - SHIFT;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    (z, n, b)
}

/// ggml's AVX-512 `e^x` for one value, in plain scalar code: the reference of the vector
/// kernel (`scalef(j, n)` is `j · 2ⁿ` rounded once, which `f64` holds exactly).
pub fn exp_avx512_way(x: f32) -> f32 {
    let (_, n, b) = reduce(x);
    let u = b * b;
    let j = C[4]
        .mul_add(b, C[3])
        .mul_add(u, C[2].mul_add(b, C[1]))
        .mul_add(u, C[0].mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // 2ⁿ built from its bits (|n| ≤ 192 here): exact, whatever `powi` promises.
    let two_n = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(j) * two_n) as f32
}

/// ggml's AVX2 `e^x` for one value, in plain scalar code: the reference of the vector kernel.
pub fn exp_avx2_way(x: f32) -> f32 {
    let (z, n, b) = reduce(x);
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = C[4]
        .mul_add(b, C[3])
        .mul_add(u, C[2].mul_add(b, C[1]))
        .mul_add(u, C[0] * b);
    if n.abs() <= 126.0 || n.is_nan() {
        return j.mul_add(k, k);
    }
    let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        return s1 * s1;
    }
    s2.mul_add(j, s2) * s1
}

/// The vector kernels.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{C, LN2_HI, LN2_LO, LOG2_E, SHIFT};
    use std::arch::x86_64::*;

    /// `silu(gate) · up` in 16 lanes, ggml's AVX-512 way.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and DQ; the slices must be of one length (values past the
    /// last multiple of 16 are left unwritten).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn swiglu_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, g), u) in out
            .chunks_exact_mut(16)
            .zip(gate.chunks_exact(16))
            .zip(up.chunks_exact(16))
        {
            // SAFETY: each chunk holds 16 values, what the unaligned loads and the store touch.
            unsafe {
                let x = _mm512_loadu_ps(g.as_ptr());
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e));
                _mm512_storeu_ps(
                    o.as_mut_ptr(),
                    _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr())),
                );
            }
        }
    }

    /// ggml's AVX-512 `e^x`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn exp16(x: __m512) -> __m512 {
        let z = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2_E), _mm512_set1_ps(SHIFT));
        let n = _mm512_sub_ps(z, _mm512_set1_ps(SHIFT));
        let b = _mm512_fnmadd_ps(
            n,
            _mm512_set1_ps(LN2_LO),
            _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x),
        );
        let far = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
        let u = _mm512_mul_ps(b, b);
        let c = |i: usize| _mm512_set1_ps(C[i]);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(c(4), b, c(3)),
                u,
                _mm512_fmadd_ps(c(2), b, c(1)),
            ),
            u,
            _mm512_fmadd_ps(c(0), b, _mm512_set1_ps(1.0)),
        );
        let res = _mm512_scalef_ps(j, n);
        if far == 0 {
            return res;
        }
        let zero = _mm512_setzero_ps();
        let low = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero);
        let alt = _mm512_mask_blend_ps(low, _mm512_set1_ps(f32::INFINITY), zero);
        _mm512_mask_blend_ps(far, res, alt)
    }

    /// `silu(gate) · up` in 8 lanes, ggml's AVX2 way.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the slices must be of one length (values past the last
    /// multiple of 8 are left unwritten).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn swiglu_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, g), u) in out
            .chunks_exact_mut(8)
            .zip(gate.chunks_exact(8))
            .zip(up.chunks_exact(8))
        {
            // SAFETY: each chunk holds 8 values, what the unaligned loads and the store touch.
            unsafe {
                let x = _mm256_loadu_ps(g.as_ptr());
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
                let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                _mm256_storeu_ps(
                    o.as_mut_ptr(),
                    _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr())),
                );
            }
        }
    }

    /// ggml's AVX2 `e^x`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2_E), _mm256_set1_ps(SHIFT));
        let n = _mm256_sub_ps(z, _mm256_set1_ps(SHIFT));
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
        );
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
        let u = _mm256_mul_ps(b, b);
        let c = |i: usize| _mm256_set1_ps(C[i]);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(4), b, c(3)),
                u,
                _mm256_fmadd_ps(c(2), b, c(1)),
            ),
            u,
            _mm256_mul_ps(c(0), b),
        );
        if _mm256_movemask_ps(big) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let far = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
        _mm256_or_ps(
            _mm256_and_ps(far, _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                far,
                _mm256_or_ps(
                    _mm256_and_ps(big, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                    _mm256_andnot_ps(big, _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gate values over the range a model produces and past it: a sweep, the edges of the
    /// vector code's special ranges, and random bit patterns (NaN and infinities among them).
    fn gates() -> Vec<f32> {
        let mut v: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-3).collect();
        for edge in [
            87.3f32, 88.0, 88.4, 88.8, 89.0, 103.0, 104.0, 126.0, 133.0, 150.0,
        ] {
            for s in [1.0f32, -1.0] {
                let x = s * edge;
                v.extend([
                    x,
                    f32::from_bits(x.to_bits() + 1),
                    f32::from_bits(x.to_bits() - 1),
                ]);
            }
        }
        let mut s = 0x9e37_79b9u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s));
        }
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ]);
        v
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn both_ways_approximate_exp_closely() {
        for way in [exp_avx512_way as fn(f32) -> f32, exp_avx2_way] {
            let mut worst = 0.0f64;
            for i in -87_000..=88_000 {
                let x = i as f32 * 1e-3;
                let truth = (x as f64).exp();
                worst = worst.max(((way(x) as f64 - truth) / truth).abs());
            }
            // ggml states at most 1.45 ulp plus 0.5 for the rounding: about 2.3e-7 relative.
            assert!(worst < 2.5e-7, "worst relative error {worst}");
            assert_eq!(way(-200.0), 0.0);
            assert_eq!(way(200.0), f32::INFINITY);
            assert!(way(f32::NAN).is_nan());
        }
    }

    #[test]
    fn swiglu_equals_its_scalar_statement_bit_for_bit() {
        let g = gates();
        let u: Vec<f32> = (0..g.len())
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        // A length that leaves a tail for libm after the last whole vector.
        let n = g.len() / 16 * 16 - 3;
        let mut out = vec![0.0f32; n];
        swiglu(&g[..n], &u[..n], &mut out);
        let (exp, lanes): (fn(f32) -> f32, usize) = match variant() {
            Variant::Avx512 => (exp_avx512_way, 16),
            Variant::Avx2 => (exp_avx2_way, 8),
            Variant::Libm => (f32::exp, 1),
        };
        let vectors = n / lanes * lanes;
        for i in 0..n {
            let x = g[i];
            let e = if i < vectors {
                exp(0.0 - x)
            } else {
                (-x).exp()
            };
            let want = x / (1.0 + e) * u[i];
            assert!(
                same(out[i], want),
                "{:?}: silu({x}) · {} = {} vs {want}",
                variant(),
                u[i],
                out[i]
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_vector_kernel_equals_its_scalar_way() {
        let g = gates();
        let n = g.len() / 16 * 16;
        let u = vec![1.0f32; n];
        let mut out = vec![0.0f32; n];
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the features were just detected; the slices hold `n` values, a multiple of 16.
            unsafe { x86::swiglu_avx512(&g[..n], &u, &mut out) };
            for (&x, &o) in g.iter().zip(&out) {
                let want = x / (1.0 + exp_avx512_way(0.0 - x));
                assert!(same(o, want), "AVX-512: silu({x}) = {o} vs {want}");
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were just detected; the slices hold `n` values, a multiple of 8.
            unsafe { x86::swiglu_avx2(&g[..n], &u, &mut out) };
            for (&x, &o) in g.iter().zip(&out) {
                let want = x / (1.0 + exp_avx2_way(0.0 - x));
                assert!(same(o, want), "AVX2: silu({x}) = {o} vs {want}");
            }
        }
    }
}
