//! Layer normalization, optionally fused with the residual add that precedes it in transformers.

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

    #[test]
    fn l2_normalize_gives_unit_rows_and_keeps_zero_rows() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0];
        l2_normalize_rows(&mut x, 2);
        assert_eq!(x, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
