//! Dense layers: `y = x · Wᵀ + b`, with `W` packed at load time for the kernel this CPU runs.
//!
//! On AVX-512 machines the weights are packed in 32-column panels for kiln's own micro-kernel
//! (`avx512.rs`); on wasm with SIMD128 kiln's own SIMD128 kernel (`wasm_simd.rs`) multiplies
//! the transposed weights; elsewhere the `gemm` crate does.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm_simd;

use crate::cpu::{simd_level, SimdLevel};
#[cfg(not(target_arch = "wasm32"))]
use crate::parallel::{threads, PARALLEL_FLOP_THRESHOLD};

/// A dense layer whose weight is stored transposed (`[in, out]`, row-major), and packed in
/// panels when the AVX-512 kernel will run.
#[derive(Debug, Clone)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    /// `W` transposed: `in_features` rows of `out_features` values.
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
    #[cfg(target_arch = "x86_64")]
    packed: Option<Packed>,
}

/// Weights in panels of 32 output columns (zero-padded), with the bias padded alike.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone)]
struct Packed {
    panels: Vec<f32>,
    bias: Vec<f32>,
}

/// Width of a packed panel.
#[cfg(target_arch = "x86_64")]
const PANEL: usize = 32;

#[cfg(target_arch = "x86_64")]
impl Packed {
    fn new(weight_t: &[f32], bias: Option<&[f32]>, k: usize, n: usize) -> Self {
        let count = n.div_ceil(PANEL);
        let mut panels = vec![0.0f32; count * k * PANEL];
        for p in 0..count {
            let cols = PANEL.min(n - p * PANEL);
            for kk in 0..k {
                let src = &weight_t[kk * n + p * PANEL..kk * n + p * PANEL + cols];
                panels[(p * k + kk) * PANEL..(p * k + kk) * PANEL + cols].copy_from_slice(src);
            }
        }
        let mut padded = vec![0.0f32; count * PANEL];
        if let Some(b) = bias {
            padded[..n].copy_from_slice(b);
        }
        Self {
            panels,
            bias: padded,
        }
    }
}

/// A raw output pointer shared by threads that write disjoint column ranges.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
#[cfg(target_arch = "x86_64")]
// SAFETY: the pointer is only dereferenced inside `forward_packed`, where each thread writes a
// disjoint set of output columns while the owning `&mut [f32]` is borrowed for the call.
unsafe impl Send for SharedOut {}
#[cfg(target_arch = "x86_64")]
// SAFETY: as above; no two threads touch the same element.
unsafe impl Sync for SharedOut {}

#[cfg(target_arch = "x86_64")]
impl SharedOut {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

impl Linear {
    /// Builds a layer from a PyTorch-layout weight `[out, in]` and an optional bias `[out]`.
    ///
    /// # Panics
    /// If the slice lengths do not match the dimensions (callers check shapes when loading).
    pub fn from_torch(
        weight: &[f32],
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        assert_eq!(weight.len(), out_features * in_features, "weight length");
        if let Some(b) = &bias {
            assert_eq!(b.len(), out_features, "bias length");
        }
        let mut weight_t = vec![0.0; weight.len()];
        for o in 0..out_features {
            for i in 0..in_features {
                weight_t[i * out_features + o] = weight[o * in_features + i];
            }
        }
        Self::finish(in_features, out_features, weight_t, bias)
    }

    fn finish(
        in_features: usize,
        out_features: usize,
        weight_t: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Self {
        Self::finish_for(in_features, out_features, weight_t, bias, simd_level())
    }

    fn finish_for(
        in_features: usize,
        out_features: usize,
        weight_t: Vec<f32>,
        bias: Option<Vec<f32>>,
        level: SimdLevel,
    ) -> Self {
        #[cfg(target_arch = "x86_64")]
        let packed = (level == SimdLevel::Avx512)
            .then(|| Packed::new(&weight_t, bias.as_deref(), in_features, out_features));
        #[cfg(not(target_arch = "x86_64"))]
        let _ = level;
        Self {
            in_features,
            out_features,
            weight_t,
            bias,
            #[cfg(target_arch = "x86_64")]
            packed,
        }
    }

    /// Stacks layers that read the same input into one wider layer (e.g. Q, K and V).
    pub fn concat(layers: &[Linear]) -> Self {
        let in_features = layers[0].in_features;
        assert!(layers.iter().all(|l| l.in_features == in_features));
        let out_features: usize = layers.iter().map(|l| l.out_features).sum();
        let mut weight_t = Vec::with_capacity(in_features * out_features);
        for i in 0..in_features {
            for l in layers {
                weight_t
                    .extend_from_slice(&l.weight_t[i * l.out_features..(i + 1) * l.out_features]);
            }
        }
        let bias = if layers.iter().all(|l| l.bias.is_some()) {
            Some(
                layers
                    .iter()
                    .flat_map(|l| l.bias.as_ref().expect("checked").iter().copied())
                    .collect(),
            )
        } else {
            None
        };
        Self::finish(in_features, out_features, weight_t, bias)
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Computes `out[rows, out] = x[rows, in] · Wᵀ + b`, overwriting `out`.
    ///
    /// # Panics
    /// If `x` or `out` do not hold `rows` rows of the right width.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.in_features, self.out_features);
        assert_eq!(x.len(), rows * k, "input length");
        assert_eq!(out.len(), rows * n, "output length");
        if rows == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.packed {
            return self.forward_packed(packed, x, rows, out);
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return wasm_simd::forward(x, rows, k, &self.weight_t, n, self.bias.as_deref(), out);
        #[allow(unreachable_code)]
        self.forward_gemm(x, rows, out)
    }

    /// The portable path: the `gemm` crate on the transposed weight (rayon threads on native).
    fn forward_gemm(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.in_features, self.out_features);
        let read_dst = if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(n) {
                row.copy_from_slice(b);
            }
            true
        } else {
            false
        };
        #[cfg(not(target_arch = "wasm32"))]
        let parallelism = if 2 * rows * k * n >= PARALLEL_FLOP_THRESHOLD && threads() > 1 {
            gemm::Parallelism::Rayon(threads())
        } else {
            gemm::Parallelism::None
        };
        #[cfg(target_arch = "wasm32")]
        let parallelism = gemm::Parallelism::None;
        // SAFETY: all three matrices are valid for the strides and sizes given: `out` holds
        // `rows * n` values with row stride `n`, `x` holds `rows * k` with row stride `k`,
        // `weight_t` holds `k * n` with row stride `n` (asserted above and at construction);
        // `out` does not alias the inputs because it is a unique borrow.
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                read_dst,
                x.as_ptr(),
                1,
                k as isize,
                self.weight_t.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Linear {
    /// The AVX-512 path: threads split the panels; each walks row blocks over its panels.
    fn forward_packed(&self, packed: &Packed, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.in_features, self.out_features);
        let count = n.div_ceil(PANEL);
        let shared = SharedOut(out.as_mut_ptr());
        let run = |first: usize, last: usize| {
            // Row chunks keep a slice of `x` hot in L2 while the panels stream past it.
            for chunk in (0..rows).step_by(48) {
                let chunk_end = rows.min(chunk + 48);
                for p in first..last {
                    let cols = PANEL.min(n - p * PANEL);
                    let panel = &packed.panels[p * k * PANEL..(p + 1) * k * PANEL];
                    let bias = &packed.bias[p * PANEL..(p + 1) * PANEL];
                    let mut r = chunk;
                    while r < chunk_end {
                        let m = avx512::MR.min(chunk_end - r);
                        // SAFETY: `forward` asserted `x.len() == rows * k` and
                        // `out.len() == rows * n`; rows r..r+m < rows, columns
                        // p*32..p*32+cols <= n, `panel` holds k*32 values and `bias` 32;
                        // AVX-512F is present since `packed` exists only at that level;
                        // threads write disjoint panels' columns.
                        unsafe {
                            let xp = x.as_ptr().add(r * k);
                            let op = shared.get().add(r * n + p * PANEL);
                            let (pp, bp) = (panel.as_ptr(), bias.as_ptr());
                            match m {
                                12 => avx512::block::<12>(xp, k, k, pp, bp, op, n, cols),
                                11 => avx512::block::<11>(xp, k, k, pp, bp, op, n, cols),
                                10 => avx512::block::<10>(xp, k, k, pp, bp, op, n, cols),
                                9 => avx512::block::<9>(xp, k, k, pp, bp, op, n, cols),
                                8 => avx512::block::<8>(xp, k, k, pp, bp, op, n, cols),
                                7 => avx512::block::<7>(xp, k, k, pp, bp, op, n, cols),
                                6 => avx512::block::<6>(xp, k, k, pp, bp, op, n, cols),
                                5 => avx512::block::<5>(xp, k, k, pp, bp, op, n, cols),
                                4 => avx512::block::<4>(xp, k, k, pp, bp, op, n, cols),
                                3 => avx512::block::<3>(xp, k, k, pp, bp, op, n, cols),
                                2 => avx512::block::<2>(xp, k, k, pp, bp, op, n, cols),
                                _ => avx512::block::<1>(xp, k, k, pp, bp, op, n, cols),
                            }
                        }
                        r += m;
                    }
                }
            }
        };
        let workers = threads().min(count);
        if 2 * rows * k * n >= PARALLEL_FLOP_THRESHOLD && workers > 1 {
            crate::parallel::for_each_index(workers, |t| {
                run(t * count / workers, (t + 1) * count / workers)
            });
        } else {
            run(0, count);
        }
    }
}

/// The plain triple loop `out = x · Wᵀ + b` on a PyTorch-layout weight: the reference kernels are tested against.
pub fn linear_scalar(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    in_features: usize,
    out_features: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * out_features];
    for r in 0..rows {
        for o in 0..out_features {
            let mut acc = bias.map_or(0.0, |b| b[o]) as f64;
            for i in 0..in_features {
                acc += x[r * in_features + i] as f64 * weight[o * in_features + i] as f64;
            }
            out[r * out_features + o] = acc as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_scalar_for_many_shapes() {
        for &(rows, k, n) in &[
            (13, 40, 33),
            (25, 17, 65),
            (1, 1, 1),
            (3, 5, 7),
            (12, 384, 384),
            (33, 64, 100),
            (128, 384, 1536),
        ] {
            let x = pseudo_random(rows * k, 1);
            let w = pseudo_random(n * k, 2);
            let b = pseudo_random(n, 3);
            let expected = linear_scalar(&x, &w, Some(&b), rows, k, n);
            let best = Linear::from_torch(&w, Some(b.clone()), n, k);
            // The `gemm` path, whatever this CPU has.
            let portable = Linear::finish_for(
                k,
                n,
                best.weight_t.clone(),
                Some(b.clone()),
                SimdLevel::Baseline,
            );
            #[cfg(target_arch = "x86_64")]
            assert!(portable.packed.is_none());
            for lin in [&best, &portable] {
                let mut out = vec![f32::NAN; rows * n];
                lin.forward(&x, rows, &mut out);
                for (a, e) in out.iter().zip(&expected) {
                    assert!(
                        (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{rows}x{k}x{n}: {a} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn concat_equals_separate_layers() {
        let (rows, k) = (4, 8);
        let x = pseudo_random(rows * k, 9);
        let layers: Vec<Linear> = (0..3)
            .map(|i| {
                Linear::from_torch(
                    &pseudo_random(5 * k, 10 + i),
                    Some(pseudo_random(5, 20 + i)),
                    5,
                    k,
                )
            })
            .collect();
        let fused = Linear::concat(&layers);
        let mut out = vec![0.0; rows * 15];
        fused.forward(&x, rows, &mut out);
        for (li, l) in layers.iter().enumerate() {
            let mut part = vec![0.0; rows * 5];
            l.forward(&x, rows, &mut part);
            for r in 0..rows {
                assert_eq!(
                    &out[r * 15 + li * 5..r * 15 + li * 5 + 5],
                    &part[r * 5..r * 5 + 5]
                );
            }
        }
    }

    #[test]
    fn no_bias_and_zero_rows() {
        let lin = Linear::from_torch(&[1.0, 2.0, 3.0, 4.0], None, 2, 2);
        let mut out = vec![0.0; 2];
        lin.forward(&[1.0, 1.0], 1, &mut out);
        assert_eq!(out, vec![3.0, 7.0]);
        lin.forward(&[], 0, &mut []);
    }
}
