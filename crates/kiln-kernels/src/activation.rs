//! Activation functions.

/// The error function, with absolute error below 1.2e-7 (Numerical Recipes' `erfc` Chebyshev fit).
pub fn erf(x: f32) -> f32 {
    let z = x.abs() as f64;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = 1.0 - erfc;
    (if x >= 0.0 { r } else { -r }) as f32
}

/// Exact GELU, `x · Φ(x)` with the error function, as BERT's `hidden_act = "gelu"` defines it.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// ReLU.
pub fn relu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values of erf from tables (Abramowitz & Stegun 7.1).
        for &(x, e) in &[
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
            (4.0, 1.0),
        ] {
            assert!((erf(x) - e).abs() < 2e-7, "erf({x}) = {} vs {e}", erf(x));
        }
    }

    #[test]
    fn gelu_at_known_points() {
        let mut x = vec![0.0, 1.0, -1.0, 3.0];
        gelu_erf(&mut x);
        let expected = [0.0, 0.841_344_7, -0.158_655_3, 2.995_950_5];
        for (a, e) in x.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        let mut t = vec![1.0];
        gelu_tanh(&mut t);
        assert!((t[0] - 0.841_192).abs() < 1e-5);
    }
}
