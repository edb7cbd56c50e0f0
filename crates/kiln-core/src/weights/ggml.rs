//! ggml storage types: block layouts and dequantization to `f32`.
//!
//! Layouts follow ggml's definitions (`block_q4_0`, `block_q4_K`, ...). Dequantization is the
//! reference path used at load time and by tests; quantized dot products belong to kiln-kernels,
//! whose dequantizers of the formats it multiplies (Q4_0, Q5_0, Q4_K, Q6_K) are used here too,
//! so that the tests against gguf-py check the very code the model runs.

use half::{bf16, f16};
use kiln_kernels::quant_blocks;

/// Storage types of ggml tensors (the ids GGUF files use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, one scale per 32 values.
    Q4_0,
    /// 4-bit, scale and minimum per 32 values.
    Q4_1,
    /// 5-bit, one scale per 32 values.
    Q5_0,
    /// 5-bit, scale and minimum per 32 values.
    Q5_1,
    /// 8-bit, one scale per 32 values.
    Q8_0,
    /// 8-bit with block sums (activations).
    Q8_1,
    /// 2-bit k-quant.
    Q2K,
    /// 3-bit k-quant.
    Q3K,
    /// 4-bit k-quant, super-blocks of 256.
    Q4K,
    /// 5-bit k-quant, super-blocks of 256.
    Q5K,
    /// 6-bit k-quant, super-blocks of 256.
    Q6K,
    /// 8-bit k-quant (activations).
    Q8K,
}

impl GgmlType {
    /// The type of a ggml type id, if kiln knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
        }
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q8_1 => (32, 36),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Q8K => (256, 292),
        }
    }

    /// Bytes of a tensor of `numel` values whose rows hold `row_len` values.
    pub fn byte_size(self, numel: usize, row_len: usize) -> Result<usize, String> {
        let (per_block, bytes) = self.block();
        if !row_len.is_multiple_of(per_block) {
            return Err(format!(
                "rows of {row_len} values are not a multiple of the {} block size {per_block}",
                self.name()
            ));
        }
        (numel / per_block)
            .checked_mul(bytes)
            .ok_or_else(|| "byte size overflows".to_string())
    }

    /// Dequantizes `numel` values stored in `data`.
    pub fn dequantize(self, data: &[u8], numel: usize) -> Result<Vec<f32>, String> {
        let (per_block, bytes) = self.block();
        if !numel.is_multiple_of(per_block) || data.len() != numel / per_block * bytes {
            return Err(format!(
                "{} data of {} bytes does not hold {numel} values",
                self.name(),
                data.len()
            ));
        }
        let mut out = Vec::with_capacity(numel);
        let blocks = data.chunks_exact(bytes);
        match self {
            Self::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Self::F16 => out.extend(blocks.map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            Self::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            Self::Q4_0 | Self::Q5_0 | Self::Q4K | Self::Q6K => {
                out.resize(numel, 0.0);
                let dequantize = match self {
                    Self::Q4_0 => quant_blocks::dequantize_q4_0,
                    Self::Q5_0 => quant_blocks::dequantize_q5_0,
                    Self::Q4K => quant_blocks::dequantize_q4_k,
                    _ => quant_blocks::dequantize_q6_k,
                };
                dequantize(data, &mut out);
            }
            Self::Q4_1 => blocks.for_each(|b| q4_1(b, &mut out)),
            Self::Q5_1 => blocks.for_each(|b| q5_1(b, &mut out)),
            Self::Q8_0 => blocks.for_each(|b| {
                let d = half_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }),
            Self::Q5K => blocks.for_each(|b| q5_k(b, &mut out)),
            Self::Q8K => blocks.for_each(|b| {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..260].iter().map(|&q| q as i8 as f32 * d));
            }),
            Self::Q8_1 | Self::Q2K | Self::Q3K => {
                return Err(format!("dequantizing {} is not supported yet", self.name()))
            }
        }
        Ok(out)
    }
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
    out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
}

/// Q5_1: 5-bit values with a scale and a minimum.
fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for (j, &q) in qs.iter().enumerate() {
        out.push(((q & 0x0F) as u32 | (((qh >> j) << 4) & 0x10)) as f32 * d + m);
    }
    for (j, &q) in qs.iter().enumerate() {
        out.push(((q >> 4) as u32 | ((qh >> (j + 12)) & 0x10)) as f32 * d + m);
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K/Q5_K super-block.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (
            ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4)) as f32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32,
        )
    }
}

fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        out.extend(q.iter().zip(qh).map(|(&v, &h)| {
            d * s1 * ((v & 0x0F) + if h & u1 != 0 { 16 } else { 0 }) as f32 - dmin * m1
        }));
        out.extend(q.iter().zip(qh).map(|(&v, &h)| {
            d * s2 * ((v >> 4) + if h & u2 != 0 { 16 } else { 0 }) as f32 - dmin * m2
        }));
    }
}
