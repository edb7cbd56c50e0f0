//! Dense layers: `y = x · Wᵀ + b`, with `W` pre-packed at load time.

use crate::parallel::{threads, PARALLEL_FLOP_THRESHOLD};

/// A dense layer whose weight is stored transposed (`[in, out]`, row-major) for the GEMM.
#[derive(Debug, Clone)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    /// `W` transposed: `in_features` rows of `out_features` values.
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
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
        Self {
            in_features,
            out_features,
            weight_t,
            bias,
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
        Self {
            in_features,
            out_features,
            weight_t,
            bias,
        }
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
        let read_dst = if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(n) {
                row.copy_from_slice(b);
            }
            true
        } else {
            false
        };
        let flops = 2 * rows * k * n;
        let parallelism = if flops >= PARALLEL_FLOP_THRESHOLD && threads() > 1 {
            gemm::Parallelism::Rayon(threads())
        } else {
            gemm::Parallelism::None
        };
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
            (1, 1, 1),
            (3, 5, 7),
            (12, 384, 384),
            (33, 64, 100),
            (128, 384, 1536),
        ] {
            let x = pseudo_random(rows * k, 1);
            let w = pseudo_random(n * k, 2);
            let b = pseudo_random(n, 3);
            let lin = Linear::from_torch(&w, Some(b.clone()), n, k);
            let mut out = vec![f32::NAN; rows * n];
            lin.forward(&x, rows, &mut out);
            let expected = linear_scalar(&x, &w, Some(&b), rows, k, n);
            for (a, e) in out.iter().zip(&expected) {
                assert!(
                    (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{rows}x{k}x{n}: {a} vs {e}"
                );
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
