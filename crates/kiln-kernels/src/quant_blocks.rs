//! The ggml block formats beyond Q4_1/Q8_0 that GGUF files of Gemma and Qwen use: Q4_0 and Q5_0
//! (blocks of 32, against Q8_0 activations) and the "K" super-blocks Q4_K and Q6_K (256 values,
//! against Q8_K activations: an `f32` scale per 256 values and sums per 16). Each dot product is
//! an exact integer sum per block scaled in `f32`, as ggml computes it; the plain loops are
//! compiled for AVX-512/AVX2 by the `multiversion!` macro of `cpu.rs` and tested against
//! the dequantized weights.

use crate::quant::half_to_f32;

/// Values per K super-block.
pub const K_BLOCK: usize = 256;

fn f16_at(b: &[u8], i: usize) -> f32 {
    half_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// One input row quantized as ggml's Q8_K: per 256 values an `f32` scale, and per 16 values
/// the sum of the quantized values.
pub struct Q8KRow {
    /// Scales, one per 256 values.
    pub d: Vec<f32>,
    /// Sums of each 16 quantized values.
    pub bsums: Vec<i32>,
    /// Quantized values.
    pub q: Vec<i8>,
}

/// Quantizes `x` like ggml's `quantize_row_q8_K`: the value of largest magnitude maps to -127
/// (scale `-max/127`), values are rounded half to even.
pub fn quantize_row_q8_k(x: &[f32]) -> Q8KRow {
    let blocks = x.len() / K_BLOCK;
    let mut row = Q8KRow {
        d: vec![0.0; blocks],
        bsums: vec![0; blocks * 16],
        q: vec![0; blocks * K_BLOCK],
    };
    let parts = x
        .chunks_exact(K_BLOCK)
        .zip(row.q.chunks_exact_mut(K_BLOCK))
        .zip(row.bsums.chunks_exact_mut(16));
    for (((b, q), bsums), d) in parts.zip(&mut row.d) {
        *d = quantize_block_q8_k(b, q, bsums);
    }
    row
}

/// One 256-value block of [`quantize_row_q8_k`] into `q` and the 16 sums `bsums`, returning
/// the scale: in whole vectors with AVX-512 (`quantize_avx512`), else
/// [`quantize_block_q8_k_plain`], with the same bits.
fn quantize_block_q8_k(b: &[f32], q: &mut [i8], bsums: &mut [i32]) -> f32 {
    assert!(
        b.len() == K_BLOCK && q.len() == K_BLOCK && bsums.len() == 16,
        "one Q8_K block"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512 {
        // SAFETY: simd_level() reports AVX-512 only when the CPU has AVX-512 F and BW; the
        // lengths were checked above, as the kernel requires.
        return unsafe { crate::quantize_avx512::quantize_block_q8_k(b, q, bsums) };
    }
    quantize_block_q8_k_plain(b, q, bsums)
}

/// [`quantize_block_q8_k`] in plain code: the other CPUs' path and the statement the AVX-512
/// kernel is tested against.
pub(crate) fn quantize_block_q8_k_plain(b: &[f32], q: &mut [i8], bsums: &mut [i32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in b {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let iscale = -127.0 / max;
    if !iscale.is_finite() {
        // All zeros, or values so small (below about 4e-37) that the scale's inverse
        // overflows: zeros, with a zero scale.
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    // |iscale · v| <= 127 for every value of the block, so no value needs clamping.
    crate::quant::scale_round(b, iscale, q);
    for (s, c) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = c.iter().map(|&v| v as i32).sum();
    }
    1.0 / iscale
}

/// All eight 6-bit scales and minimums of a Q4_K block's 12 packed bytes at once, four bytes
/// per `u32` operation (ggml packs sub-blocks 0-3 in six bits, 4-7 in two nibble-and-two-bit
/// pieces).
#[inline(always)]
pub(crate) fn q4_k_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    // Sub-blocks 0-3: the low six bits of bytes 0-3 (scales) and 4-7 (minimums). Sub-blocks
    // 4-7: a nibble of bytes 8-11, topped by the two high bits of bytes 0-3 (scales) or 4-7.
    let scales_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mins_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    let join = |lo: u32, hi: u32| {
        let (lo, hi) = (lo.to_le_bytes(), hi.to_le_bytes());
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    };
    (join(a & LOW6, scales_hi), join(b & LOW6, mins_hi))
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K block's 12 packed bytes, one at a
/// time as ggml's reference code reads them: what [`q4_k_scales_mins`] is tested against.
#[cfg(test)]
pub(crate) fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// The 32 signed values of Q5_0 block `blk` (22 bytes: f16 scale, 32 high bits, 16 nibble pairs).
fn q5_0_values(blk: &[u8]) -> [i8; 32] {
    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
    let mut v = [0i8; 32];
    for j in 0..16 {
        let lo = blk[6 + j];
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        v[j] = ((lo & 0x0f) | (h0 << 4)) as i8 - 16;
        v[j + 16] = ((lo >> 4) | (h1 << 4)) as i8 - 16;
    }
    v
}

/// The 256 signed values of a Q6_K block and its 16 sub-block scales.
pub(crate) fn q6_k_values(blk: &[u8]) -> ([i8; K_BLOCK], [i8; 16]) {
    let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
    let mut v = [0i8; K_BLOCK];
    for half in 0..2 {
        let (ql, qh, out) = (
            &ql[half * 64..],
            &qh[half * 32..],
            &mut v[half * 128..(half + 1) * 128],
        );
        for l in 0..32 {
            out[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
            out[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    (v, std::array::from_fn(|i| sc[i] as i8))
}

/// Dequantizes one row of Q4_0 blocks (18 bytes: f16 scale, 16 nibble pairs, values `q - 8`).
pub fn dequantize_q4_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(blk, 0);
        for j in 0..16 {
            o[j] = ((blk[2 + j] & 0x0f) as i32 - 8) as f32 * d;
            o[j + 16] = ((blk[2 + j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Dequantizes one row of Q5_0 blocks.
pub fn dequantize_q5_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(blk, 0);
        for (o, v) in o.iter_mut().zip(q5_0_values(blk)) {
            *o = v as f32 * d;
        }
    }
}

/// Dequantizes one row of Q4_K blocks (144 bytes: f16 scale and minimum scale, 12 bytes of
/// 6-bit sub-block scales and minimums, 128 nibble bytes).
pub fn dequantize_q4_k(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(144).zip(out.chunks_exact_mut(K_BLOCK)) {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let (scales, mins) = q4_k_scales_mins(blk[4..16].try_into().unwrap());
        let qs = &blk[16..144];
        for chunk in 0..4 {
            let q = &qs[chunk * 32..(chunk + 1) * 32];
            let (s0, m0) = (scales[2 * chunk], mins[2 * chunk]);
            let (s1, m1) = (scales[2 * chunk + 1], mins[2 * chunk + 1]);
            let (d0, d1) = (d * s0 as f32, d * s1 as f32);
            let (n0, n1) = (dmin * m0 as f32, dmin * m1 as f32);
            for l in 0..32 {
                o[chunk * 64 + l] = d0 * (q[l] & 0x0f) as f32 - n0;
                o[chunk * 64 + 32 + l] = d1 * (q[l] >> 4) as f32 - n1;
            }
        }
    }
}

/// Dequantizes one row of Q6_K blocks (210 bytes: 128 low-nibble bytes, 64 high-bit bytes,
/// 16 signed sub-block scales, f16 scale).
pub fn dequantize_q6_k(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(210).zip(out.chunks_exact_mut(K_BLOCK)) {
        let d = f16_at(blk, 208);
        let (v, sc) = q6_k_values(blk);
        for (i, (o, v)) in o.iter_mut().zip(v).enumerate() {
            *o = d * sc[i / 16] as f32 * v as f32;
        }
    }
}

crate::cpu::multiversion! {
    /// Σ over blocks of `d_w · d_x · Σ (q_w - 8) q_x` (ggml's `vec_dot_q4_0_q8_0`).
    pub fn dot_q4_0(w: &[u8], d: &[f32], q: &[i8]) -> f32 {
        let mut acc = 0.0f32;
        for (b, blk) in w.chunks_exact(18).enumerate() {
            let qx = &q[b * 32..(b + 1) * 32];
            let mut isum = 0i32;
            for j in 0..16 {
                isum += ((blk[2 + j] & 0x0f) as i32 - 8) * qx[j] as i32
                    + ((blk[2 + j] >> 4) as i32 - 8) * qx[j + 16] as i32;
            }
            acc += f16_at(blk, 0) * d[b] * isum as f32;
        }
        acc
    }
}

crate::cpu::multiversion! {
    /// Σ over blocks of `d_w · d_x · Σ q_w q_x` with 5-bit weights (ggml's `vec_dot_q5_0_q8_0`).
    pub fn dot_q5_0(w: &[u8], d: &[f32], q: &[i8]) -> f32 {
        let mut acc = 0.0f32;
        for (b, blk) in w.chunks_exact(22).enumerate() {
            let qx = &q[b * 32..(b + 1) * 32];
            let v = q5_0_values(blk);
            let isum: i32 = v.iter().zip(qx).map(|(&a, &b)| a as i32 * b as i32).sum();
            acc += f16_at(blk, 0) * d[b] * isum as f32;
        }
        acc
    }
}

crate::cpu::multiversion! {
    /// Σ over super-blocks of `d_w d_x Σ_j s_j Σ q_w q_x - dmin_w d_x Σ_j m_j Σ q_x`
    /// (ggml's `vec_dot_q4_K_q8_K`).
    pub fn dot_q4_k(w: &[u8], d: &[f32], bsums: &[i32], q: &[i8]) -> f32 {
        let mut acc = 0.0f32;
        for (b, blk) in w.chunks_exact(144).enumerate() {
            let (scales, mins) = q4_k_scales_mins(blk[4..16].try_into().unwrap());
            let qs = &blk[16..144];
            let qx = &q[b * K_BLOCK..(b + 1) * K_BLOCK];
            let sums = &bsums[b * 16..(b + 1) * 16];
            let (mut isum, mut msum) = (0i32, 0i32);
            for chunk in 0..4 {
                let nib = &qs[chunk * 32..(chunk + 1) * 32];
                let (x0, x1) = (
                    &qx[chunk * 64..chunk * 64 + 32],
                    &qx[chunk * 64 + 32..chunk * 64 + 64],
                );
                let (s0, m0) = (scales[2 * chunk], mins[2 * chunk]);
                let (s1, m1) = (scales[2 * chunk + 1], mins[2 * chunk + 1]);
                let mut p0 = 0i32;
                let mut p1 = 0i32;
                for l in 0..32 {
                    p0 += (nib[l] & 0x0f) as i32 * x0[l] as i32;
                    p1 += (nib[l] >> 4) as i32 * x1[l] as i32;
                }
                isum += s0 as i32 * p0 + s1 as i32 * p1;
                msum += m0 as i32 * (sums[4 * chunk] + sums[4 * chunk + 1])
                    + m1 as i32 * (sums[4 * chunk + 2] + sums[4 * chunk + 3]);
            }
            acc += f16_at(blk, 0) * d[b] * isum as f32 - f16_at(blk, 2) * d[b] * msum as f32;
        }
        acc
    }
}

crate::cpu::multiversion! {
    /// Σ over super-blocks of `d_w d_x Σ_j s_j Σ q_w q_x` with 6-bit weights
    /// (ggml's `vec_dot_q6_K_q8_K`).
    pub fn dot_q6_k(w: &[u8], d: &[f32], q: &[i8]) -> f32 {
        let mut acc = 0.0f32;
        for (b, blk) in w.chunks_exact(210).enumerate() {
            let (v, sc) = q6_k_values(blk);
            let qx = &q[b * K_BLOCK..(b + 1) * K_BLOCK];
            let mut isum = 0i32;
            for (j, (vs, xs)) in v.chunks_exact(16).zip(qx.chunks_exact(16)).enumerate() {
                let p: i32 = vs.iter().zip(xs).map(|(&a, &b)| a as i32 * b as i32).sum();
                isum += sc[j] as i32 * p;
            }
            acc += f16_at(blk, 208) * d[b] * isum as f32;
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::f32_to_half;

    /// A deterministic byte stream.
    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as u8
            })
            .collect()
    }

    /// Random blocks of `block_bytes`, with sane f16 scales at `scale_offsets`.
    fn blocks(n: usize, block_bytes: usize, scale_offsets: &[usize], seed: u32) -> Vec<u8> {
        let mut b = bytes(n * block_bytes, seed);
        for (i, blk) in b.chunks_exact_mut(block_bytes).enumerate() {
            for (k, &off) in scale_offsets.iter().enumerate() {
                let v = 0.002 + 0.0007 * ((i * 3 + k) % 11) as f32;
                blk[off..off + 2].copy_from_slice(&f32_to_half(v).to_le_bytes());
            }
        }
        b
    }

    fn input(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 509) as f32 - 254.0) / 61.0)
            .collect()
    }

    #[test]
    fn q8_k_quantization_maps_the_largest_magnitude_to_127() {
        let mut x = input(512);
        x[3] = -40.0;
        x[300] = 40.0;
        let row = quantize_row_q8_k(&x);
        // The value of largest magnitude maps to -127, whatever its sign.
        assert_eq!((row.q[3], row.q[300]), (-127, -127));
        assert!(row.d[0] > 0.0 && row.d[1] < 0.0);
        for (i, &v) in x.iter().enumerate() {
            let back = row.q[i] as f32 * row.d[i / K_BLOCK];
            assert!(
                (back - v).abs() <= row.d[i / K_BLOCK].abs() * 0.5 + 1e-6,
                "{i}"
            );
        }
        for (j, c) in row.q.chunks_exact(16).enumerate() {
            assert_eq!(row.bsums[j], c.iter().map(|&v| v as i32).sum::<i32>());
        }
        let zero = quantize_row_q8_k(&[0.0; 256]);
        assert_eq!((zero.d[0], zero.bsums[0]), (0.0, 0));
    }

    /// The dot product of the dequantized weights with the dequantized activations.
    fn reference(w: &[f32], q: &[i8], scale: impl Fn(usize) -> f32) -> f32 {
        w.iter()
            .zip(q)
            .enumerate()
            .map(|(i, (&w, &q))| w as f64 * (q as f32 * scale(i)) as f64)
            .sum::<f64>() as f32
    }

    #[test]
    fn block_32_dots_equal_the_dequantized_products() {
        let k = 256;
        let x = input(k);
        let d: Vec<f32> = x
            .chunks_exact(32)
            .map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0)
            .collect();
        let q: Vec<i8> = x
            .iter()
            .enumerate()
            .map(|(i, v)| (v / d[i / 32]).round() as i8)
            .collect();
        let mut w = vec![0.0; k];
        let q4 = blocks(k / 32, 18, &[0], 1);
        dequantize_q4_0(&q4, &mut w);
        let want = reference(&w, &q, |i| d[i / 32]);
        let got = dot_q4_0(&q4, &d, &q);
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "q4_0 {got} {want}"
        );
        let q5 = blocks(k / 32, 22, &[0], 2);
        dequantize_q5_0(&q5, &mut w);
        assert!(w.iter().all(|&v| v.abs() <= 16.0 * 0.01));
        let want = reference(&w, &q, |i| d[i / 32]);
        let got = dot_q5_0(&q5, &d, &q);
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "q5_0 {got} {want}"
        );
    }

    #[test]
    fn k_dots_equal_the_dequantized_products() {
        let k = 3 * K_BLOCK;
        let x = input(k);
        let row = quantize_row_q8_k(&x);
        let mut w = vec![0.0; k];
        let q4 = blocks(k / K_BLOCK, 144, &[0, 2], 3);
        dequantize_q4_k(&q4, &mut w);
        let want = reference(&w, &row.q, |i| row.d[i / K_BLOCK]);
        let got = dot_q4_k(&q4, &row.d, &row.bsums, &row.q);
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "q4_k {got} {want}"
        );
        let q6 = blocks(k / K_BLOCK, 210, &[208], 4);
        dequantize_q6_k(&q6, &mut w);
        let want = reference(&w, &row.q, |i| row.d[i / K_BLOCK]);
        let got = dot_q6_k(&q6, &row.d, &row.q);
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "q6_k {got} {want}"
        );
    }

    #[test]
    fn q4_k_scales_and_mins_at_once_equal_one_at_a_time() {
        let mut state = 0x1234_5678u32;
        for _ in 0..1000 {
            let s: [u8; 12] = std::array::from_fn(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            });
            let (scales, mins) = q4_k_scales_mins(&s);
            for j in 0..8 {
                assert_eq!(
                    (scales[j], mins[j]),
                    q4_k_scale_min(j, &s),
                    "{s:?} sub-block {j}"
                );
            }
        }
    }
}
