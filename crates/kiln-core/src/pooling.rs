//! Pooling token states into one vector per sequence, as sentence-transformers' `Pooling` module does.

use serde::Deserialize;

/// How token states become a sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    /// The first token's state (`[CLS]`).
    Cls,
    /// The mean over tokens.
    Mean,
    /// The element-wise maximum over tokens.
    Max,
    /// The sum over tokens divided by the square root of the length.
    MeanSqrtLen,
    /// The last token's state.
    LastToken,
}

impl std::str::FromStr for PoolingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cls" => Ok(Self::Cls),
            "mean" => Ok(Self::Mean),
            "max" => Ok(Self::Max),
            "mean_sqrt_len" => Ok(Self::MeanSqrtLen),
            "lasttoken" | "last_token" => Ok(Self::LastToken),
            other => Err(format!(
                "unknown pooling `{other}` (expected cls, mean, max, mean_sqrt_len or last_token)"
            )),
        }
    }
}

/// Pools one sequence's states `[len, width]` with each mode in turn, concatenating the results.
pub fn pool(states: &[f32], width: usize, modes: &[PoolingMode]) -> Vec<f32> {
    let len = states.len() / width;
    let mut out = Vec::with_capacity(width * modes.len());
    for mode in modes {
        match mode {
            PoolingMode::Cls => out.extend_from_slice(&states[..width]),
            PoolingMode::LastToken => out.extend_from_slice(&states[(len - 1) * width..]),
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                let mut acc = vec![0.0f32; width];
                for row in states.chunks_exact(width) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                let div = if *mode == PoolingMode::Mean {
                    len as f32
                } else {
                    (len as f32).sqrt()
                };
                out.extend(acc.iter().map(|a| a / div));
            }
            PoolingMode::Max => {
                let mut acc = vec![f32::NEG_INFINITY; width];
                for row in states.chunks_exact(width) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a = a.max(*v);
                    }
                }
                out.extend(acc);
            }
        }
    }
    out
}

/// Scales `v` to unit L2 norm (a zero vector stays zero), as `torch.nn.functional.normalize`.
pub fn l2_normalize(v: &mut [f32]) {
    let dim = v.len();
    kiln_kernels::norm::l2_normalize_rows(v, dim);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_on_a_small_matrix() {
        let s = [1.0, -2.0, 3.0, 4.0, 5.0, 0.0];
        assert_eq!(pool(&s, 2, &[PoolingMode::Cls]), vec![1.0, -2.0]);
        assert_eq!(pool(&s, 2, &[PoolingMode::LastToken]), vec![5.0, 0.0]);
        assert_eq!(pool(&s, 2, &[PoolingMode::Mean]), vec![3.0, 2.0 / 3.0]);
        assert_eq!(pool(&s, 2, &[PoolingMode::Max]), vec![5.0, 4.0]);
        let sq = pool(&s, 2, &[PoolingMode::MeanSqrtLen]);
        assert!((sq[0] - 9.0 / 3f32.sqrt()).abs() < 1e-6);
        assert_eq!(
            pool(&s, 2, &[PoolingMode::Cls, PoolingMode::Max]),
            vec![1.0, -2.0, 5.0, 4.0]
        );
    }
}
