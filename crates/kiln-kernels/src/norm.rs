//! Layer normalization, optionally fused with the residual add that precedes it in transformers,
//! and RMS normalization as ggml computes it (decoder models).

/// `x = LayerNorm(x + residual)` over rows of `gamma.len()` values.
///
/// # Panics
/// If the lengths of `x`, `residual`, `gamma` and `beta` disagree.
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert_eq!(x.len(), residual.len(), "residual length");
    for (row, res) in x
        .chunks_exact_mut(gamma.len())
        .zip(residual.chunks_exact(gamma.len()))
    {
        for (v, r) in row.iter_mut().zip(res) {
            *v += r;
        }
        normalize_row(row, gamma, beta, eps);
    }
}

/// `x = LayerNorm(x)` over rows of `gamma.len()` values.
///
/// # Panics
/// If `x.len()` is not a multiple of `gamma.len()` or `beta` differs in length from `gamma`.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert_eq!(x.len() % gamma.len(), 0, "input length");
    for row in x.chunks_exact_mut(gamma.len()) {
        normalize_row(row, gamma, beta, eps);
    }
}

crate::cpu::multiversion! {
    /// Normalizes one row in place: `(x - mean) / sqrt(var + eps) * gamma + beta`.
    pub fn normalize_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        normalize_row_body(row, gamma, beta, eps)
    }
}

/// Sum of `values` in 16 interleaved lanes, so that the compiler vectorizes it.
#[inline(always)]
fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0.0f32; 16];
    for (i, v) in values.enumerate() {
        acc[i % 16] += v;
    }
    acc.iter().sum()
}

#[inline(always)]
fn normalize_row_body(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert_eq!(gamma.len(), beta.len(), "beta length");
    let n = row.len() as f32;
    let mean = lane_sum(row.iter().copied()) / n;
    let var = lane_sum(row.iter().map(|v| (v - mean) * (v - mean))) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

crate::cpu::multiversion! {
    /// `1/√(mean(x²) + eps)` of one row, the squares summed in `f64` as ggml's `rms_norm` sums
    /// them. ggml adds them one after another; here eight interleaved lanes add them, so the
    /// loop vectorizes. The two `f64` sums differ by about 1e-14 of their value, far below
    /// what the `f32` mean keeps.
    ///
    /// An empty row gives NaN.
    pub fn rms_inverse(row: &[f32], eps: f32) -> f32 {
        let mut lanes = [0.0f64; 8];
        let chunks = row.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += (v * v) as f64;
            }
        }
        let mut sum: f64 = lanes.iter().sum();
        for &v in rest {
            sum += (v * v) as f64;
        }
        let mean = (sum / row.len() as f64) as f32;
        1.0 / (mean + eps).sqrt()
    }
}

/// `out = x / rms(x) · weight` for every row of `weight.len()` values (RMSNorm); rows are
/// spread over the kernel threads when there are enough values.
///
/// # Panics
/// If `x` and `out` differ in length or do not hold whole rows.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    crate::parallel::map_rows(out, h, x, h, |o, row| {
        let inv = rms_inverse(row, eps);
        for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    });
}

/// [`rms_norm`] in place, on the calling thread: each `weight.len()`-wide chunk of `x` (every
/// head of a row, or every row) is normalized.
///
/// # Panics
/// If `weight` is empty or `x` does not hold whole chunks.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    assert!(
        !weight.is_empty() && x.len().is_multiple_of(weight.len()),
        "whole chunks"
    );
    for chunk in x.chunks_exact_mut(weight.len()) {
        let inv = rms_inverse(chunk, eps);
        for (v, w) in chunk.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

/// Scales each row of `x` (rows of `width` values) to unit L2 norm; all-zero rows stay zero.
pub fn l2_normalize_rows(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        // Matches torch.nn.functional.normalize's eps of 1e-12.
        let inv = 1.0 / norm.max(1e-12);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_norm_f64(x: &[f32], g: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        x.iter()
            .zip(g.iter().zip(b))
            .map(|(&v, (&g, &b))| {
                (((v as f64 - mean) / (var + eps).sqrt()) * g as f64 + b as f64) as f32
            })
            .collect()
    }

    #[test]
    fn layer_norm_matches_f64_reference() {
        let x: Vec<f32> = (0..384)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let g: Vec<f32> = (0..384).map(|i| 1.0 + (i % 5) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..384).map(|i| (i % 3) as f32 * 0.01).collect();
        let mut y = x.clone();
        layer_norm(&mut y, &g, &b, 1e-12);
        for (a, e) in y.iter().zip(layer_norm_f64(&x, &g, &b, 1e-12)) {
            assert!((a - e).abs() < 1e-5, "{a} vs {e}");
        }
    }

    #[test]
    fn fused_residual_equals_add_then_norm() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 * 0.3).collect();
        let r: Vec<f32> = (0..64).map(|i| (i as f32).sin()).collect();
        let (g, b) = (vec![1.5; 32], vec![0.25; 32]);
        let mut fused = x.clone();
        add_layer_norm(&mut fused, &r, &g, &b, 1e-5);
        let mut sep: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
        layer_norm(&mut sep, &g, &b, 1e-5);
        assert_eq!(fused, sep);
    }

    /// ggml's `rms_norm` scale: the squares summed one after another in `f64`.
    fn rms_inverse_sequential(row: &[f32], eps: f32) -> f32 {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / row.len() as f64) as f32;
        1.0 / (mean + eps).sqrt()
    }

    #[test]
    fn rms_inverse_equals_the_sequential_f64_sum() {
        let mut s = 0x9e37_79b9u32;
        let mut differ = 0;
        for len in [1usize, 7, 8, 9, 64, 576, 640, 2048] {
            for _ in 0..200 {
                let row: Vec<f32> = (0..len)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 17;
                        s ^= s << 5;
                        (s as f32 / u32::MAX as f32 - 0.5) * 40.0
                    })
                    .collect();
                let (fast, slow) = (rms_inverse(&row, 1e-6), rms_inverse_sequential(&row, 1e-6));
                // The mean may round the other way for a rare row: one ulp at most.
                assert!(
                    (fast - slow).abs() <= slow * f32::EPSILON,
                    "len {len}: {fast} vs {slow}"
                );
                differ += usize::from(fast != slow);
            }
        }
        assert!(differ <= 2, "{differ} of 1600 rows differ");
    }

    #[test]
    fn rms_norm_scales_rows_by_their_root_mean_square() {
        let x = vec![3.0, 4.0, 0.0, 1.0, 1.0, 1.0];
        let w = vec![1.0, 2.0, 0.5];
        let mut out = vec![0.0; 6];
        rms_norm(&x, &w, 0.0, &mut out);
        let r0 = (25.0f32 / 3.0).sqrt();
        let expected = [3.0 / r0, 8.0 / r0, 0.0, 1.0, 2.0, 0.5];
        for (a, e) in out.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        let mut inplace = x.clone();
        rms_norm_in_place(&mut inplace, &w, 0.0);
        assert_eq!(inplace, out);
        // Many rows take the threaded path and give the same values.
        let big: Vec<f32> = (0..64 * 576).map(|i| (i % 97) as f32 - 48.0).collect();
        let w: Vec<f32> = (0..576).map(|i| 1.0 + (i % 3) as f32).collect();
        let mut threaded = vec![0.0; big.len()];
        rms_norm(&big, &w, 1e-5, &mut threaded);
        let mut serial = big.clone();
        rms_norm_in_place(&mut serial, &w, 1e-5);
        assert_eq!(threaded, serial);
    }

    #[test]
    fn l2_normalize_gives_unit_rows_and_keeps_zero_rows() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0];
        l2_normalize_rows(&mut x, 2);
        assert_eq!(x, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
