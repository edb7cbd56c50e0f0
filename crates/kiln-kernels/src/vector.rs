//! Small vector primitives for loops that walk a KV cache (decoder attention): a dot product
//! and `y += a · x`, written so the compiler vectorizes them (sixteen independent partial
//! sums; plain element-wise updates) and compiled for each instruction set by
//! [`multiversion!`](crate::cpu::multiversion).

crate::cpu::multiversion! {
    /// `Σ a[i] · b[i]` over the common length, summed in sixteen lanes, then lane by lane.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 16];
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..16 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut sum = acc.iter().sum::<f32>();
        for (x, y) in ra.iter().zip(rb) {
            sum += x * y;
        }
        sum
    }
}

crate::cpu::multiversion! {
    /// `y[i] += a · x[i]` over the common length.
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_plain_loops() {
        for n in [0usize, 1, 15, 16, 17, 64, 100, 256] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 11 % 19) as f32 - 9.0) / 5.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let got = dot(&a, &b) as f64;
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{n}: {got} vs {want}"
            );
            let mut y = b.clone();
            axpy(&mut y, 0.5, &a);
            for i in 0..n {
                assert_eq!(y[i], b[i] + 0.5 * a[i]);
            }
        }
    }
}
