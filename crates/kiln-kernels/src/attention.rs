//! Multi-head self-attention over packed, unpadded sequences.
//!
//! The input holds the rows of several sequences back to back (no padding); each row is
//! `[q | k | v]`, each `heads * head_dim` wide. Each sequence attends only to itself.

use crate::parallel::PARALLEL_FLOP_THRESHOLD;

/// Shape of a bidirectional attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Bidirectional attention for sequences of `seq_lens` rows packed in `qkv`; writes `[rows, hidden]` into `out`.
///
/// # Panics
/// If `qkv` or `out` do not hold `seq_lens.sum()` rows of the right width.
pub fn packed_bidirectional(
    qkv: &[f32],
    seq_lens: &[usize],
    shape: AttentionShape,
    out: &mut [f32],
) {
    let hidden = shape.hidden();
    let rows: usize = seq_lens.iter().sum();
    assert_eq!(qkv.len(), rows * 3 * hidden, "qkv length");
    assert_eq!(out.len(), rows * hidden, "output length");
    // Split input and output into per-sequence pieces.
    let mut jobs = Vec::with_capacity(seq_lens.len());
    let (mut q_rest, mut o_rest) = (qkv, &mut out[..]);
    for &len in seq_lens {
        let (q, qr) = q_rest.split_at(len * 3 * hidden);
        let (o, or) = std::mem::take(&mut o_rest).split_at_mut(len * hidden);
        jobs.push((q, o, len));
        q_rest = qr;
        o_rest = or;
    }
    let flops: usize = seq_lens.iter().map(|l| 4 * l * l * hidden).sum();
    if flops >= PARALLEL_FLOP_THRESHOLD && jobs.len() > 1 {
        crate::parallel::for_each_mut(&mut jobs, |(q, o, len)| sequence(q, *len, shape, o));
    } else {
        for (q, o, len) in jobs {
            sequence(q, len, shape, o);
        }
    }
}

/// Attention for one sequence of `len` rows.
fn sequence(qkv: &[f32], len: usize, shape: AttentionShape, out: &mut [f32]) {
    sequence_simd(qkv, len, shape.heads, shape.head_dim, out);
}

crate::cpu::multiversion! {
    /// Attention for one sequence, compiled for the best instruction set, with the common head widths
    /// specialized so the output row stays in registers.
    pub fn sequence_simd(qkv: &[f32], len: usize, heads: usize, head_dim: usize, out: &mut [f32]) {
        let shape = AttentionShape { heads, head_dim };
        match head_dim {
            32 => sequence_body::<32>(qkv, len, shape, out),
            64 => sequence_body::<64>(qkv, len, shape, out),
            _ => sequence_body::<0>(qkv, len, shape, out),
        }
    }
}

/// Loops are `axpy` updates over contiguous rows, never float reductions the compiler may not
/// reorder, so they vectorize. `D` is the head width when known at compile time, else 0.
#[inline(always)]
fn sequence_body<const D: usize>(qkv: &[f32], len: usize, shape: AttentionShape, out: &mut [f32]) {
    let (hidden, d) = (shape.hidden(), shape.head_dim);
    debug_assert!(D == 0 || D == d);
    let scale = 1.0 / (d as f32).sqrt();
    // Keys of one head transposed to [d, len]; values of one head as [len, d].
    let mut k_t = vec![0.0f32; d * len];
    let mut v_head = vec![0.0f32; len * d];
    let mut scores = vec![0.0f32; len];
    for h in 0..shape.heads {
        for j in 0..len {
            let row = &qkv[j * 3 * hidden..(j + 1) * 3 * hidden];
            for (c, &k) in row[hidden + h * d..hidden + (h + 1) * d].iter().enumerate() {
                k_t[c * len + j] = k;
            }
            v_head[j * d..(j + 1) * d]
                .copy_from_slice(&row[2 * hidden + h * d..2 * hidden + (h + 1) * d]);
        }
        for i in 0..len {
            let q = &qkv[i * 3 * hidden + h * d..i * 3 * hidden + (h + 1) * d];
            scores.fill(0.0);
            for (c, &qc) in q.iter().enumerate() {
                let qc = qc * scale;
                for (s, &k) in scores.iter_mut().zip(&k_t[c * len..(c + 1) * len]) {
                    *s += qc * k;
                }
            }
            let max = lane_max(&scores);
            for s in scores.iter_mut() {
                *s = crate::activation::exp(*s - max);
            }
            let inv = 1.0 / lane_sum(&scores);
            let o = &mut out[i * hidden + h * d..i * hidden + (h + 1) * d];
            if D > 0 {
                let mut acc = [0.0f32; D];
                for (j, &p) in scores.iter().enumerate() {
                    for (a, &v) in acc.iter_mut().zip(&v_head[j * D..(j + 1) * D]) {
                        *a += p * v;
                    }
                }
                for (o, a) in o.iter_mut().zip(acc) {
                    *o = a * inv;
                }
            } else {
                o.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    for (ov, vv) in o.iter_mut().zip(&v_head[j * d..(j + 1) * d]) {
                        *ov += p * vv;
                    }
                }
                for ov in o.iter_mut() {
                    *ov *= inv;
                }
            }
        }
    }
}

/// Sum in 16 interleaved lanes, so that it vectorizes.
#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Maximum in 16 interleaved lanes.
#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Textbook attention in f64 for one sequence.
    fn reference(qkv: &[f32], len: usize, heads: usize, d: usize) -> Vec<f32> {
        let hidden = heads * d;
        let mut out = vec![0.0f32; len * hidden];
        for h in 0..heads {
            for i in 0..len {
                let q = |c: usize| qkv[i * 3 * hidden + h * d + c] as f64;
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|c| q(c) * qkv[j * 3 * hidden + hidden + h * d + c] as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    out[i * hidden + h * d + c] = (0..len)
                        .map(|j| e[j] / z * qkv[j * 3 * hidden + 2 * hidden + h * d + c] as f64)
                        .sum::<f64>() as f32;
                }
            }
        }
        out
    }

    #[test]
    fn specialized_head_widths_match_the_reference() {
        for head_dim in [32usize, 64] {
            let shape = AttentionShape { heads: 2, head_dim };
            let len = 19;
            let w = 3 * 2 * head_dim;
            let qkv: Vec<f32> = (0..len * w)
                .map(|i| ((i * 7919 % 113) as f32 / 113.0) - 0.5)
                .collect();
            let mut out = vec![0.0; len * 2 * head_dim];
            packed_bidirectional(&qkv, &[len], shape, &mut out);
            let expected = reference(&qkv, len, 2, head_dim);
            for (a, e) in out.iter().zip(&expected) {
                assert!((a - e).abs() < 1e-5, "head_dim {head_dim}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn packed_sequences_attend_only_to_themselves() {
        let shape = AttentionShape {
            heads: 3,
            head_dim: 4,
        };
        let lens = [5usize, 1, 7];
        let rows: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..rows * 36)
            .map(|i| ((i * 7919 % 113) as f32 / 113.0) - 0.5)
            .collect();
        let mut out = vec![0.0; rows * 12];
        packed_bidirectional(&qkv, &lens, shape, &mut out);
        let mut start = 0;
        for &len in &lens {
            let expected = reference(&qkv[start * 36..(start + len) * 36], len, 3, 4);
            for (a, e) in out[start * 12..(start + len) * 12].iter().zip(&expected) {
                assert!((a - e).abs() < 1e-5, "{a} vs {e}");
            }
            start += len;
        }
    }
}
