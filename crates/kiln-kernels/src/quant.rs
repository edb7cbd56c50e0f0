//! Dense layers on ggml-quantized weights (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K), computed the
//! way llama.cpp does: each input row is quantized to 8 bits per block (Q8_1 against Q4_1
//! weights, Q8_0 against the other 32-value formats, Q8_K against the K formats), the block
//! dot products are exact integer sums, and the scales are f16.
//! Matching llama.cpp's arithmetic keeps kiln's logits within float rounding of llama.cpp's,
//! and the weights stay 4-8 bits wide in memory.

use crate::parallel::threads;
use crate::quant_blocks::{self as blocks, quantize_row_q8_k, Q8KRow, K_BLOCK};

/// Values per quantization block.
pub const BLOCK: usize = 32;

/// The weight formats this module multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// ggml Q4_0: f16 scale, 32 4-bit values centred on 8 (18 bytes).
    Q4_0,
    /// ggml Q4_1: f16 scale, f16 minimum, 32 4-bit values (20 bytes).
    Q4_1,
    /// ggml Q5_0: f16 scale, 32 5-bit values centred on 16 (22 bytes).
    Q5_0,
    /// ggml Q8_0: f16 scale, 32 signed bytes (34 bytes).
    Q8_0,
    /// ggml Q4_K: 256 4-bit values with 6-bit sub-block scales and minimums (144 bytes).
    Q4K,
    /// ggml Q6_K: 256 6-bit values with 8-bit sub-block scales (210 bytes).
    Q6K,
}

impl QuantFormat {
    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4K => 144,
            QuantFormat::Q6K => 210,
        }
    }

    /// Values in one block.
    pub fn block_len(self) -> usize {
        match self {
            QuantFormat::Q4K | QuantFormat::Q6K => K_BLOCK,
            _ => BLOCK,
        }
    }
}

/// A dense layer without bias whose weight rows are ggml blocks.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    format: QuantFormat,
    in_features: usize,
    out_features: usize,
    /// The bytes holding the blocks (possibly a whole model file, shared with other layers).
    bytes: std::sync::Arc<Vec<u8>>,
    /// Where this layer's blocks start in `bytes`.
    start: usize,
    /// Whether the blocks are in the packed layout of [`crate::quant_packed`].
    packed: bool,
}

fn f16(bits: [u8; 2]) -> f32 {
    half_to_f32(u16::from_le_bytes(bits))
}

/// IEEE half to single precision.
pub fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalize.
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((m << shift) & 0x3ff) << 13
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// [`f32_to_half`] of every value of `x`, into `out`: 16 at a time by AVX-512's `vcvtps2ph`
/// where [`crate::cpu::simd_level`] allows it (the same bits for every value but NaN, whose
/// payload the instruction keeps), else one at a time.
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn f32_to_half_slice(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len(), "lengths");
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512 {
        done = x.len() / 16 * 16;
        // SAFETY: simd_level() reported AVX-512F; the first `done` values of both slices,
        // a multiple of 16, exist (equal lengths, checked above).
        unsafe { halves_avx512(&x[..done], &mut out[..done]) };
    }
    for (o, &v) in out[done..].iter_mut().zip(&x[done..]) {
        *o = f32_to_half(v);
    }
}

/// [`round_to_f16`] of every value of `x`, in place: 16 at a time by AVX-512's `vcvtps2ph`
/// and `vcvtph2ps` where [`crate::cpu::simd_level`] allows it (the same bits for every value
/// but NaN, whose payload the instructions keep), else one at a time.
pub fn round_to_f16_slice(x: &mut [f32]) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512 {
        done = x.len() / 16 * 16;
        // SAFETY: simd_level() reported AVX-512F; the first `done` values, a multiple of 16,
        // exist.
        unsafe { round_halves_avx512(&mut x[..done]) };
    }
    for v in &mut x[done..] {
        *v = round_to_f16(*v);
    }
}

/// `vcvtps2ph` (round to nearest even) and back, 16 values at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `x` holds a multiple of 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn round_halves_avx512(x: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(x.len().is_multiple_of(16));
    for x in x.chunks_exact_mut(16) {
        // SAFETY: each chunk is 16 values: the load and the store touch its 64 bytes.
        unsafe {
            let v = _mm512_loadu_ps(x.as_ptr());
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            _mm512_storeu_ps(x.as_mut_ptr(), _mm512_cvtph_ps(h));
        }
    }
}

/// `vcvtps2ph` (round to nearest even) of 16 values at a time.
///
/// # Safety
/// The CPU must have AVX-512F; both slices hold the same multiple of 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn halves_avx512(x: &[f32], out: &mut [u16]) {
    use std::arch::x86_64::*;
    assert!(x.len() == out.len() && x.len().is_multiple_of(16));
    for (x, o) in x.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        // SAFETY: each chunk is 16 values: the load reads 64 bytes of `x`, the store writes
        // 32 bytes of `out`.
        unsafe {
            let v = _mm512_loadu_ps(x.as_ptr());
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, h);
        }
    }
}

/// Single to half precision, rounding to nearest even (as F16C's `vcvtps2ph`).
pub fn f32_to_half(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let round = rem > mid || (rem == mid && half & 1 == 1);
        return sign | (half + round as u32) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    sign | (half + round as u32) as u16
}

/// Rounds to the nearest value representable in f16, ties to even (the precision of
/// llama.cpp's KV cache). Branch-light so loops over it vectorize: f16 subnormals are
/// multiples of 2^-24, which adding and removing 0.5 rounds to; normal values keep 10 mantissa
/// bits, rounded on the bit pattern; the rest (overflow, NaN) takes the exact conversion.
#[inline(always)]
pub fn round_to_f16(x: f32) -> f32 {
    let a = x.abs();
    if a < 6.103_515_6e-5 {
        ((a + 0.5) - 0.5).copysign(x)
    } else if a < 65504.0 {
        let b = x.to_bits();
        f32::from_bits((b + 0x0fff + ((b >> 13) & 1)) & !0x1fff)
    } else {
        half_to_f32(f32_to_half(x))
    }
}

/// Input rows quantized for the layers of one input width and block length
/// ([`QuantLinear::quantize_input`]).
pub struct QuantizedInput {
    block_len: usize,
    in_features: usize,
    rows: Vec<Activations>,
}

impl QuantizedInput {
    /// Whether `layer` takes this input: the same input width and block length.
    pub fn suits(&self, layer: &QuantLinear) -> bool {
        self.in_features == layer.in_features && self.block_len == layer.format.block_len()
    }
}

/// One input row quantized for a weight format: Q8_0/Q8_1 blocks of 32, or Q8_K blocks of 256.
enum Activations {
    B32(QuantRow),
    K(Q8KRow),
}

impl Activations {
    fn new(format: QuantFormat, x: &[f32]) -> Self {
        match format.block_len() {
            K_BLOCK => Activations::K(quantize_row_q8_k(x)),
            _ => Activations::B32(quantize_row(x)),
        }
    }
}

/// One input row quantized to 8 bits per block: scales (f16-rounded), `d · Σq` (f16-rounded),
/// exact `Σq`, values.
struct QuantRow {
    d: Vec<f32>,
    s: Vec<f32>,
    sum: Vec<i32>,
    q: Vec<i8>,
}

impl QuantRow {
    /// The row as the packed-layout kernels take it.
    fn packed(&self) -> crate::quant_packed::PackedRow<'_> {
        crate::quant_packed::PackedRow {
            d: &self.d,
            s: &self.s,
            sum: &self.sum,
            q: &self.q,
        }
    }
}

/// Quantizes `x` like ggml's AVX2 `quantize_row_q8_1`/`q8_0`: scale `max|x| / 127` stored as
/// f16, values rounded half to even, and (for Q8_1) `s = d · Σq` stored as f16.
fn quantize_row(x: &[f32]) -> QuantRow {
    let blocks = x.len() / BLOCK;
    let mut row = QuantRow {
        d: vec![0.0; blocks],
        s: vec![0.0; blocks],
        sum: vec![0; blocks],
        q: vec![0; blocks * BLOCK],
    };
    quantize_blocks(x, &mut row.q, &mut row.d, &mut row.s, &mut row.sum);
    row
}

/// The work of `quantize_row` for every 32-value block of `x`: the maximum magnitude, the
/// rounded values and their sum, the f16 scale and `d · Σq`. With AVX-512 the blocks go
/// through whole-vector code (`quantize_avx512`); elsewhere through
/// [`quantize_blocks_plain`]. Both give the same bits.
///
/// # Panics
/// If `x` is not whole blocks, `q` not as long as `x`, or `d`, `s` or `sum` not one value per
/// block.
pub fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32]) {
    check_block_counts(x, q, d, s, sum);
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_level() == crate::cpu::SimdLevel::Avx512 {
        // SAFETY: simd_level() reports AVX-512 only when the CPU has AVX-512 F and BW; the
        // lengths were checked above, as the kernel requires.
        return unsafe { crate::quantize_avx512::quantize_blocks(x, q, d, s, sum) };
    }
    quantize_blocks_plain(x, q, d, s, sum)
}

/// The lengths [`quantize_blocks`] requires: `x` whole blocks, `q` as long as `x`, and `d`, `s`
/// and `sum` one value per block.
///
/// # Panics
/// If they do not hold.
#[inline(always)]
fn check_block_counts(x: &[f32], q: &[i8], d: &[f32], s: &[f32], sum: &[i32]) {
    let blocks = x.len() / BLOCK;
    assert!(
        x.len() == blocks * BLOCK
            && q.len() == x.len()
            && d.len() == blocks
            && s.len() == blocks
            && sum.len() == blocks,
        "block counts"
    );
}

crate::cpu::multiversion! {
    /// [`quantize_blocks`] without vector intrinsics, in one call compiled for the CPU's vector
    /// width (a call per block cost more than its arithmetic): the AVX2 and baseline path, and
    /// the statement the AVX-512 kernel is tested against.
    ///
    /// # Panics
    /// As [`quantize_blocks`].
    pub fn quantize_blocks_plain(
        x: &[f32],
        q: &mut [i8],
        d: &mut [f32],
        s: &mut [f32],
        sum: &mut [i32],
    ) {
        check_block_counts(x, q, d, s, sum);
        let blocks = x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK));
        for ((((b, q), d), s), sum) in blocks.zip(d).zip(s).zip(sum) {
            (*d, *s, *sum) = quantize_block(b, q);
        }
    }
}

/// One block of [`quantize_blocks`]: returns the f16-rounded scale, `d · Σq` and `Σq`. The
/// maximum magnitude is taken in 8 lanes, then across them (a maximum is exact in any order;
/// NaNs are passed over). A block whose largest magnitude is so small (below about 4e-37) that
/// `127 / max` overflows quantizes to zeros: its `f16` scale is 0 anyway, so the layer's output
/// is the same as ggml's (whose values there overflow).
#[inline(always)]
pub(crate) fn quantize_block(b: &[f32], q: &mut [i8]) -> (f32, f32, i32) {
    let mut lanes = [0.0f32; 8];
    for c in b.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    let scale = amax / 127.0;
    let id = inverse_scale(amax);
    let total = round_values(b, id, q);
    (
        round_to_f16(scale),
        round_to_f16(scale * total as f32),
        total,
    )
}

/// `127 / amax`, or 0 where that is not finite (a block of zeros, or of values so small that the
/// quotient overflows).
#[inline(always)]
pub(crate) fn inverse_scale(amax: f32) -> f32 {
    let id = 127.0 / amax;
    if id.is_finite() {
        id
    } else {
        0.0
    }
}

/// `quantize_row`'s scales, `d · Σq`, sums and values, for other modules' tests.
#[cfg(test)]
pub(crate) fn quantize_row_for_tests(x: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<i32>, Vec<i8>) {
    let r = quantize_row(x);
    (r.d, r.s, r.sum, r.q)
}

crate::cpu::multiversion! {
    /// `q[i] = round_half_even(x[i] · scale)` (values already within ±127), returning `Σ q`.
    pub fn scale_round(x: &[f32], scale: f32, q: &mut [i8]) -> i32 {
        round_values(x, scale, q)
    }
}

/// The body of [`scale_round`], inlined into each caller's compiled form (so
/// [`quantize_blocks`] rounds a block without a dispatched call).
#[inline(always)]
fn round_values(x: &[f32], scale: f32, q: &mut [i8]) -> i32 {
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = (v * scale).round_ties_even() as i32;
        sum += r;
        *q = r as i8;
    }
    sum
}

impl QuantLinear {
    /// Wraps ggml blocks of a `[out, in]` weight.
    ///
    /// # Panics
    /// If `in_features` is not a multiple of 32 or `data` has the wrong length.
    pub fn new(
        format: QuantFormat,
        data: Vec<u8>,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        Self::from_shared(
            format,
            std::sync::Arc::new(data),
            0,
            out_features,
            in_features,
        )
    }

    /// Wraps the blocks of a `[out, in]` weight that start at `start` in `bytes`, without
    /// copying them: the layers of a model can all point into the model file's bytes.
    ///
    /// # Panics
    /// If `in_features` is not a multiple of the block length or `bytes` is too short.
    pub fn from_shared(
        format: QuantFormat,
        bytes: std::sync::Arc<Vec<u8>>,
        start: usize,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        assert_eq!(
            in_features % format.block_len(),
            0,
            "input width must be a multiple of the block length"
        );
        let len = out_features * in_features / format.block_len() * format.block_bytes();
        assert!(
            start.checked_add(len).is_some_and(|end| end <= bytes.len()),
            "weight bytes"
        );
        Self {
            format,
            in_features,
            out_features,
            bytes,
            start,
            packed: false,
        }
    }

    /// As [`Self::from_shared`], for blocks that [`crate::quant_packed::pack_in_place`] has
    /// rearranged.
    ///
    /// # Panics
    /// As [`Self::from_shared`], and if the shape has no packed layout
    /// ([`crate::quant_packed::packable`]).
    pub fn from_shared_packed(
        format: QuantFormat,
        bytes: std::sync::Arc<Vec<u8>>,
        start: usize,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        assert!(
            crate::quant_packed::packable(format, out_features, in_features),
            "a {format:?} [{out_features}, {in_features}] matrix has no packed layout"
        );
        Self {
            packed: true,
            ..Self::from_shared(format, bytes, start, out_features, in_features)
        }
    }

    /// This layer's blocks.
    fn data(&self) -> &[u8] {
        let len = self.out_features * self.in_features / self.format.block_len()
            * self.format.block_bytes();
        &self.bytes[self.start..self.start + len]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Row `r` of the weight, dequantized (for embedding lookups).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if self.packed {
            return crate::quant_packed::dequantize_row(
                self.format,
                self.in_features,
                self.data(),
                r,
                out,
            );
        }
        let row_bytes = self.in_features / self.format.block_len() * self.format.block_bytes();
        let row = &self.data()[r * row_bytes..(r + 1) * row_bytes];
        match self.format {
            QuantFormat::Q4_0 => blocks::dequantize_q4_0(row, out),
            QuantFormat::Q5_0 => blocks::dequantize_q5_0(row, out),
            QuantFormat::Q4K => blocks::dequantize_q4_k(row, out),
            QuantFormat::Q6K => blocks::dequantize_q6_k(row, out),
            QuantFormat::Q8_0 => {
                for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(BLOCK)) {
                    let d = f16([blk[0], blk[1]]);
                    for (o, &q) in o.iter_mut().zip(&blk[2..34]) {
                        *o = q as i8 as f32 * d;
                    }
                }
            }
            QuantFormat::Q4_1 => {
                for (blk, o) in row.chunks_exact(20).zip(out.chunks_exact_mut(BLOCK)) {
                    let (d, m) = (f16([blk[0], blk[1]]), f16([blk[2], blk[3]]));
                    for (j, &q) in blk[4..20].iter().enumerate() {
                        o[j] = (q & 0x0f) as f32 * d + m;
                        o[j + 16] = (q >> 4) as f32 * d + m;
                    }
                }
            }
        }
    }

    /// Computes `out[rows, out] = x[rows, in] · Wᵀ`.
    ///
    /// # Panics
    /// If `x` or `out` do not hold `rows` rows of the right width.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        self.forward_quantized(&self.quantize_input(x, rows), out);
    }

    /// `x` (`rows` rows of `in_features`) quantized as this layer's kernels take it: 8-bit
    /// blocks of 32 or 256 values. Layers of the same input width and block length (the parts
    /// of a stacked projection) can share one [`QuantizedInput`].
    ///
    /// # Panics
    /// If `x` is not `rows` rows of `in_features`.
    pub fn quantize_input(&self, x: &[f32], rows: usize) -> QuantizedInput {
        assert_eq!(x.len(), rows * self.in_features, "input length");
        let format = self.format;
        let rows =
            if rows > 1 && x.len() >= crate::parallel::PARALLEL_VALUE_THRESHOLD && threads() > 1 {
                // A batch's rows side by side on the kernel threads: each row alone is too short
                // to split, and quantizing them one after another left the other core idle.
                let mut slots: Vec<(&[f32], Option<Activations>)> = x
                    .chunks_exact(self.in_features)
                    .map(|row| (row, None))
                    .collect();
                crate::parallel::for_each_mut(&mut slots, |(row, act)| {
                    *act = Some(Activations::new(format, row))
                });
                slots
                    .into_iter()
                    .map(|(_, act)| act.expect("every row was quantized"))
                    .collect()
            } else {
                x.chunks_exact(self.in_features)
                    .map(|row| Activations::new(format, row))
                    .collect()
            };
        QuantizedInput {
            block_len: format.block_len(),
            in_features: self.in_features,
            rows,
        }
    }

    /// `out = input · Wᵀ` for an input quantized by [`Self::quantize_input`] (of this layer or
    /// one that [`QuantizedInput::suits`]): exactly what [`Self::forward`] computes.
    ///
    /// # Panics
    /// If `input` does not suit this layer or `out` is not `rows × out_features`.
    pub fn forward_quantized(&self, input: &QuantizedInput, out: &mut [f32]) {
        Self::forward_stacked(&[(self, input)], out);
    }

    /// The outputs of several layers side by side, in one pass over the kernel threads (a
    /// stacked projection such as q/k/v): row `r` of `out` is each layer's row `r` of
    /// [`Self::forward_quantized`] in turn, with the same bits.
    ///
    /// # Panics
    /// If an input does not suit its layer, the inputs differ in row count, or `out` is not
    /// `rows × Σ out_features`.
    pub fn forward_stacked(parts: &[(&QuantLinear, &QuantizedInput)], out: &mut [f32]) {
        let Some(&(_, first)) = parts.first() else {
            return assert!(out.is_empty(), "output length");
        };
        let rows = first.rows.len();
        let fillers: Vec<Filler<'_>> = parts
            .iter()
            .map(|&(layer, input)| {
                assert!(
                    input.suits(layer),
                    "input quantized for another layer shape"
                );
                assert_eq!(input.rows.len(), rows, "row counts");
                layer.filler(input)
            })
            .collect();
        let width: usize = fillers.iter().map(|f| f.n).sum();
        assert_eq!(out.len(), rows * width, "output length");
        if width == 0 {
            return;
        }
        let work: usize = parts
            .iter()
            .map(|(l, _)| 2 * rows * l.in_features * l.out_features)
            .sum();
        if work < quant_parallel_threshold() || threads() < 2 {
            let mut segments: Vec<Vec<&mut [f32]>> = fillers.iter().map(|_| Vec::new()).collect();
            for mut row in out.chunks_exact_mut(width) {
                for (f, seg) in fillers.iter().zip(&mut segments) {
                    let (mine, rest) = std::mem::take(&mut row).split_at_mut(f.n);
                    seg.push(mine);
                    row = rest;
                }
            }
            for (f, mut seg) in fillers.iter().zip(segments) {
                (f.fill)(0, f.n, &mut seg);
            }
            return;
        }
        // One task per chunk of each layer's columns, holding that chunk of every row: the
        // tasks write their columns of `out` in place.
        let mut tasks: Vec<(usize, usize, Vec<&mut [f32]>)> = Vec::new();
        for (i, f) in fillers.iter().enumerate() {
            for c in 0..f.n.div_ceil(f.chunk) {
                tasks.push((i, c * f.chunk, Vec::with_capacity(rows)));
            }
        }
        for mut row in out.chunks_exact_mut(width) {
            let mut task = 0;
            for f in &fillers {
                let (mine, rest) = std::mem::take(&mut row).split_at_mut(f.n);
                row = rest;
                for part in mine.chunks_mut(f.chunk) {
                    tasks[task].2.push(part);
                    task += 1;
                }
            }
        }
        crate::parallel::for_each_mut(&mut tasks, |(i, start, parts)| {
            let f = &fillers[*i];
            (f.fill)(*start, (*start + f.chunk).min(f.n), parts)
        });
    }

    /// How this layer fills chunks of its output columns for `input`.
    fn filler<'a>(&'a self, input: &'a QuantizedInput) -> Filler<'a> {
        let (k, n) = (self.in_features, self.out_features);
        let quantized = &input.rows;
        if self.packed {
            return self.packed_filler(quantized);
        }
        let inputs = Inputs::new(self.format, quantized);
        let data = self.data();
        let row_bytes = k / self.format.block_len() * self.format.block_bytes();
        let format = self.format;
        Filler {
            n,
            chunk: n.div_ceil(threads() * 4).max(1),
            fill: Box::new(move |start, end, parts| {
                for o in start..end {
                    let w = &data[o * row_bytes..(o + 1) * row_bytes];
                    dot_rows(format, w, &inputs, |r, v| parts[r][o - start] = v);
                }
            }),
        }
    }

    /// [`Self::filler`] on the packed layout: output columns in groups of 16, input rows in
    /// tiles.
    fn packed_filler<'a>(&'a self, quantized: &'a [Activations]) -> Filler<'a> {
        use crate::quant_packed::{group_tile, PackedRow, GROUP, TILE};
        let (k, n) = (self.in_features, self.out_features);
        let rows_in: Vec<PackedRow<'_>> = quantized
            .iter()
            .map(|a| match a {
                Activations::B32(x) => x.packed(),
                Activations::K(x) => PackedRow {
                    d: &x.d,
                    s: &[],
                    sum: &x.bsums,
                    q: &x.q,
                },
            })
            .collect();
        let data = self.data();
        let group_bytes = k / self.format.block_len() * self.format.block_bytes() * GROUP;
        let format = self.format;
        #[cfg(target_arch = "x86_64")]
        if crate::quant_amx::pays(format, rows_in.len()) {
            use crate::quant_amx::{groups_rows, TileInput, TileScratch};
            let input = TileInput::gather(&rows_in, k / self.format.block_len());
            return Filler {
                n,
                chunk: packed_chunk(n),
                fill: Box::new(move |start, end, parts| {
                    let groups = &data[start / GROUP * group_bytes..end / GROUP * group_bytes];
                    let mut scratch = TileScratch::default();
                    groups_rows(format, groups, &input, &mut scratch, parts, 0);
                }),
            };
        }
        Filler {
            n,
            // Chunks of whole groups.
            chunk: packed_chunk(n),
            fill: Box::new(move |start, end, parts| {
                let width = end - start;
                let mut tile_out = [[0.0f32; GROUP]; TILE];
                for g in 0..width / GROUP {
                    let group = &data[(start / GROUP + g) * group_bytes..][..group_bytes];
                    for (t, tile) in rows_in.chunks(TILE).enumerate() {
                        group_tile(format, group, tile, &mut tile_out[..tile.len()]);
                        for (i, o) in tile_out[..tile.len()].iter().enumerate() {
                            let r = t * TILE + i;
                            parts[r][g * GROUP..][..GROUP].copy_from_slice(o);
                        }
                    }
                }
            }),
        }
    }
}

/// Output columns per task of a packed layer of `n` columns: whole groups, one share per
/// kernel thread.
///
/// Fewer, larger tasks stream the weights faster: each task's columns are one run of the
/// packed bytes, read ahead by the prefetchers, and a hand-over starts a new run cold. The
/// `quant_stream` bench (a whole model's layers per step, 2 threads, two alternating rounds,
/// 2026-12-04, Intel Xeon with AMX), ms per step at 1/4/8 rows: SmolLM2-135M shapes 2.16,
/// 2.12 / 2.79, 2.74 / 4.00, 3.97 with four tasks per thread; 2.13 / 2.50 / 3.62 with two;
/// 2.10 / 2.46 / 3.58 with one; Gemma 3 270M shapes within 2% either way.
/// `kiln bench` on SmolLM2, three alternating rounds, 8 streams 1375-1443 → 1512-1562
/// tokens/s, one stream 392-400 → 409-417, 20-token first token 9.7-9.9 → 9.1-9.4 ms; over
/// HTTP (`bench/chat/engine_kiln.py`'s aggregate, medians of three) 8 streams 1262-1288 →
/// 1353-1381. Eight or sixteen tasks per thread had measured slower still
/// (`bench/results/kernels-session10-2026-12-03.md`).
fn packed_chunk(n: usize) -> usize {
    use crate::quant_packed::GROUP;
    (n / GROUP).div_ceil(threads()).max(1) * GROUP
}

/// A layer's output columns as work: `fill(start, end, parts)` writes the columns
/// `start..end` of every row `r` into `parts[r]` (`end - start` values); the columns split into
/// chunks of `chunk` for the threads.
struct Filler<'a> {
    /// Output columns.
    n: usize,
    /// Columns per task.
    chunk: usize,
    /// Fills a range of columns of every row.
    fill: Box<FillColumns<'a>>,
}

/// `fill(start, end, parts)` of a [`Filler`].
type FillColumns<'a> = dyn Fn(usize, usize, &mut [&mut [f32]]) + Sync + 'a;

/// Work (in multiply-adds × 2) below which a quantized layer stays on the calling thread.
///
/// Decoding one token runs a hundred small layers. While a fork-join woke a sleeping rayon
/// thread (tens of microseconds on a virtual machine), only SmolLM2's largest single-row layers
/// (above 16 M) paid for splitting. The kernel team (`team.rs`) hands a job over without a
/// wake-up, and splitting every layer above 1 M pays: SmolLM2-135M one-stream decode
/// 147/121/136 → 168/147/195 tokens/s (`kiln generate --stats`, 128 tokens, three alternating
/// runs, 2026-12-02); 256 K and 512 K measured the same as 1 M. `KILN_QUANT_PARALLEL_FLOPS`
/// overrides it.
fn quant_parallel_threshold() -> usize {
    static T: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *T.get_or_init(|| {
        std::env::var("KILN_QUANT_PARALLEL_FLOPS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    forced.unwrap_or(crate::parallel::PARALLEL_FLOP_THRESHOLD)
}

/// The quantized input rows of one `forward` call, ready for the dot-product kernels.
struct Inputs<'a> {
    acts: &'a [Activations],
    /// Slices of the rows for the AVX-512 VNNI kernels, when this CPU runs them.
    #[cfg(target_arch = "x86_64")]
    vnni: Option<VnniRows<'a>>,
}

/// Activation rows as the VNNI kernels take them.
#[cfg(target_arch = "x86_64")]
enum VnniRows<'a> {
    B32(Vec<crate::quant_vnni::RowRef<'a>>),
    K(Vec<crate::quant_vnni::KRowRef<'a>>),
}

impl<'a> Inputs<'a> {
    fn new(format: QuantFormat, acts: &'a [Activations]) -> Self {
        #[cfg(target_arch = "x86_64")]
        let vnni = (format != QuantFormat::Q4_0 && crate::cpu::has_avx512_vnni()).then(|| {
            use crate::quant_vnni::{KRowRef, RowRef};
            match format.block_len() {
                K_BLOCK => VnniRows::K(
                    acts.iter()
                        .map(|a| match a {
                            Activations::K(x) => KRowRef {
                                d: &x.d,
                                bsums: &x.bsums,
                                q: &x.q,
                            },
                            Activations::B32(_) => unreachable!("K formats get Q8_K activations"),
                        })
                        .collect(),
                ),
                _ => VnniRows::B32(
                    acts.iter()
                        .map(|a| match a {
                            Activations::B32(x) => RowRef {
                                d: &x.d,
                                s: &x.s,
                                q: &x.q,
                            },
                            Activations::K(_) => unreachable!("32-value formats get Q8_0/Q8_1"),
                        })
                        .collect(),
                ),
            }
        });
        #[cfg(not(target_arch = "x86_64"))]
        let _ = format;
        Self {
            acts,
            #[cfg(target_arch = "x86_64")]
            vnni,
        }
    }
}

/// Dot products of one weight row with every quantized input row, handed to `put(row, value)`.
/// With AVX-512 VNNI, a weight block is unpacked once for up to eight rows.
fn dot_rows(format: QuantFormat, w: &[u8], xs: &Inputs<'_>, mut put: impl FnMut(usize, f32)) {
    #[cfg(target_arch = "x86_64")]
    if let Some(rows) = &xs.vnni {
        use crate::quant_vnni as vnni;
        // Runs `$kernel` on chunks of up to four rows of `$refs`.
        macro_rules! in_chunks {
            ($refs:expr, $kernel:ident) => {{
                let mut r0 = 0;
                for chunk in $refs.chunks(8) {
                    macro_rules! run {
                        ($n:literal) => {{
                            let rows = std::array::from_fn::<_, $n, _>(|i| chunk[i]);
                            // SAFETY: `Inputs::new` prepared these rows only after
                            // has_avx512_vnni() checked every feature the kernels enable; the
                            // rows were quantized from inputs of the layer's width, so each
                            // holds the scales, sums and values of every block of `w`.
                            let v = unsafe { vnni::$kernel::<$n>(w, rows) };
                            for (i, v) in v.into_iter().enumerate() {
                                put(r0 + i, v);
                            }
                        }};
                    }
                    match chunk.len() {
                        8 => run!(8),
                        7 => run!(7),
                        6 => run!(6),
                        5 => run!(5),
                        4 => run!(4),
                        3 => run!(3),
                        2 => run!(2),
                        _ => run!(1),
                    }
                    r0 += chunk.len();
                }
            }};
        }
        match (format, rows) {
            (QuantFormat::Q4_1, VnniRows::B32(r)) => in_chunks!(r, dot_q4_1),
            (QuantFormat::Q8_0, VnniRows::B32(r)) => in_chunks!(r, dot_q8_0),
            (QuantFormat::Q5_0, VnniRows::B32(r)) => in_chunks!(r, dot_q5_0),
            (QuantFormat::Q4K, VnniRows::K(r)) => in_chunks!(r, dot_q4_k),
            (QuantFormat::Q6K, VnniRows::K(r)) => in_chunks!(r, dot_q6_k),
            _ => unreachable!("VNNI rows are prepared only for the formats above"),
        }
        return;
    }
    for (r, x) in xs.acts.iter().enumerate() {
        put(r, dot(format, w, x));
    }
}

/// Dot product of one weight row with one quantized input row.
fn dot(format: QuantFormat, w: &[u8], x: &Activations) -> f32 {
    let x = match (format, x) {
        (QuantFormat::Q4K, Activations::K(k)) => return blocks::dot_q4_k(w, &k.d, &k.bsums, &k.q),
        (QuantFormat::Q6K, Activations::K(k)) => return blocks::dot_q6_k(w, &k.d, &k.q),
        (QuantFormat::Q4_0, Activations::B32(x)) => return blocks::dot_q4_0(w, &x.d, &x.q),
        (QuantFormat::Q5_0, Activations::B32(x)) => return blocks::dot_q5_0(w, &x.d, &x.q),
        (QuantFormat::Q4_1 | QuantFormat::Q8_0, Activations::B32(x)) => x,
        _ => unreachable!("activations are quantized for the weight's format"),
    };
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_level() >= crate::cpu::SimdLevel::Avx2 {
        debug_assert_eq!(w.len() / format.block_bytes() * BLOCK, x.q.len());
        // SAFETY: AVX2 and FMA are present (checked by simd_level); the kernels read
        // `w.len() / block_bytes` blocks from `w` and as many scales/32-value groups from the
        // row, whose lengths match (both come from the same layer width, asserted in `forward`).
        return unsafe {
            match format {
                QuantFormat::Q4_1 => avx2::dot_q4_1(w, &x.d, &x.s, &x.q),
                _ => avx2::dot_q8_0(w, &x.d, &x.q),
            }
        };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        return match format {
            QuantFormat::Q4_1 => wasm_simd::dot_q4_1(w, &x.d, &x.s, &x.q),
            _ => wasm_simd::dot_q8_0(w, &x.d, &x.q),
        };
    }
    #[allow(unreachable_code)]
    match format {
        QuantFormat::Q4_1 => dot_q4_1(w, &x.d, &x.s, &x.q),
        _ => dot_q8_0(w, &x.d, &x.q),
    }
}

/// wasm SIMD128 integer dot products: 8-bit products widened to 16 bits and summed pairwise
/// into 32-bit lanes (exact), scaled per block in f32 lanes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm_simd {
    use super::{f16, BLOCK};
    use core::arch::wasm32::*;

    /// Sum of the four lanes.
    #[inline(always)]
    fn hsum(v: v128) -> f32 {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    }

    /// Σ of the sixteen signed 8-bit products `a[i] · b[i]`, in four 32-bit lanes (exact: each
    /// 16-bit product fits, and pairs are added after widening to 32 bits).
    #[inline(always)]
    fn dot16(a: v128, b: v128) -> v128 {
        i32x4_add(
            i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(a, b)),
            i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(a, b)),
        )
    }

    /// Q4_1 weights against Q8_1 activations (same sums as the scalar `dot_q4_1`).
    ///
    /// # Panics
    /// If `d`, `s` or `q` are shorter than `w`'s blocks need.
    pub fn dot_q4_1(w: &[u8], d: &[f32], s: &[f32], q: &[i8]) -> f32 {
        let n = w.len() / 20;
        assert!(d.len() >= n && s.len() >= n && q.len() >= n * BLOCK);
        let mask = u8x16_splat(0x0f);
        let mut acc = f32x4_splat(0.0);
        let mut summs = 0.0f32;
        for b in 0..n {
            let blk = &w[b * 20..b * 20 + 20];
            let (dw, mw) = (f16([blk[0], blk[1]]), f16([blk[2], blk[3]]));
            summs += mw * s[b];
            // SAFETY: `blk` holds 20 bytes, so 16 from offset 4 are inside it; `q` holds at
            // least 32 (b + 1) values (asserted), so both 16-byte loads at 32 b are inside it.
            // v128_load accepts unaligned addresses.
            let (raw, qx0, qx1) = unsafe {
                (
                    v128_load(blk.as_ptr().add(4) as *const v128),
                    v128_load(q.as_ptr().add(b * BLOCK) as *const v128),
                    v128_load(q.as_ptr().add(b * BLOCK + 16) as *const v128),
                )
            };
            // Nibbles 0..15 read as signed bytes are still 0..15.
            let lo = v128_and(raw, mask);
            let hi = u8x16_shr(raw, 4);
            let p = i32x4_add(dot16(lo, qx0), dot16(hi, qx1));
            acc = f32x4_add(
                acc,
                f32x4_mul(f32x4_splat(dw * d[b]), f32x4_convert_i32x4(p)),
            );
        }
        hsum(acc) + summs
    }

    /// Q8_0 weights against Q8_0 activations (same sums as the scalar `dot_q8_0`).
    ///
    /// # Panics
    /// If `d` or `q` are shorter than `w`'s blocks need.
    pub fn dot_q8_0(w: &[u8], d: &[f32], q: &[i8]) -> f32 {
        let n = w.len() / 34;
        assert!(d.len() >= n && q.len() >= n * BLOCK);
        let mut acc = f32x4_splat(0.0);
        for b in 0..n {
            let blk = &w[b * 34..b * 34 + 34];
            let dw = f16([blk[0], blk[1]]);
            // SAFETY: `blk` holds 34 bytes, so 2 x 16 from offset 2 are inside it; `q` holds at
            // least 32 (b + 1) values (asserted). v128_load accepts unaligned addresses.
            let (w0, w1, qx0, qx1) = unsafe {
                (
                    v128_load(blk.as_ptr().add(2) as *const v128),
                    v128_load(blk.as_ptr().add(18) as *const v128),
                    v128_load(q.as_ptr().add(b * BLOCK) as *const v128),
                    v128_load(q.as_ptr().add(b * BLOCK + 16) as *const v128),
                )
            };
            let p = i32x4_add(dot16(w0, qx0), dot16(w1, qx1));
            acc = f32x4_add(
                acc,
                f32x4_mul(f32x4_splat(dw * d[b]), f32x4_convert_i32x4(p)),
            );
        }
        hsum(acc)
    }
}

/// AVX2 integer dot products (`vpmaddubsw`), the arithmetic of ggml's AVX2 kernels.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{f16, BLOCK};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: plain register arithmetic; the caller's target features include AVX.
        unsafe {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps(v, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// Q4_1 weights against Q8_1 activations.
    ///
    /// # Safety
    /// AVX2 and FMA must be present; `w` holds `n` 20-byte blocks and `d`, `s` at least `n`
    /// values, `q` at least `32 n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(w: &[u8], d: &[f32], s: &[f32], q: &[i8]) -> f32 {
        let n = w.len() / 20;
        assert!(d.len() >= n && s.len() >= n && q.len() >= n * BLOCK);
        // SAFETY: every load reads inside block `b < n` of `w` (20 bytes at `20 b`, of which
        // bytes 4..20 are loaded) and inside `q[32 b .. 32 b + 32]`, both checked above.
        unsafe {
            let mask = _mm_set1_epi8(0x0f);
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0.0f32;
            for b in 0..n {
                let blk = &w[b * 20..b * 20 + 20];
                let (dw, mw) = (f16([blk[0], blk[1]]), f16([blk[2], blk[3]]));
                summs += mw * s[b];
                let raw = _mm_loadu_si128(blk.as_ptr().add(4) as *const __m128i);
                let lo = _mm_and_si128(raw, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
                let qw = _mm256_set_m128i(hi, lo);
                let qx = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK) as *const __m256i);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qw, qx), ones);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[b]), _mm256_cvtepi32_ps(p), acc);
            }
            hsum(acc) + summs
        }
    }

    /// Q8_0 weights against Q8_0 activations.
    ///
    /// # Safety
    /// AVX2 and FMA must be present; `w` holds `n` 34-byte blocks, `d` at least `n` values and
    /// `q` at least `32 n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(w: &[u8], d: &[f32], q: &[i8]) -> f32 {
        let n = w.len() / 34;
        assert!(d.len() >= n && q.len() >= n * BLOCK);
        // SAFETY: loads stay inside block `b < n` of `w` (bytes 2..34 of it) and inside
        // `q[32 b .. 32 b + 32]`, checked above.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            for b in 0..n {
                let blk = &w[b * 34..b * 34 + 34];
                let dw = f16([blk[0], blk[1]]);
                let qw = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
                let qx = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK) as *const __m256i);
                // |w| as unsigned times x with w's sign: the signed product, via vpmaddubsw.
                let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
                let p = _mm256_madd_epi16(p16, ones);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[b]), _mm256_cvtepi32_ps(p), acc);
            }
            hsum(acc)
        }
    }
}

crate::cpu::multiversion! {
    /// Σ over blocks of `d_w · d_x · Σ q_w q_x + m_w · s_x` (ggml's `vec_dot_q4_1_q8_1`).
    pub fn dot_q4_1(w: &[u8], d: &[f32], s: &[f32], q: &[i8]) -> f32 {
        let mut acc = 0.0f32;
        let mut summs = 0.0f32;
        for (b, blk) in w.chunks_exact(20).enumerate() {
            let (dw, mw) = (f16([blk[0], blk[1]]), f16([blk[2], blk[3]]));
            let qx = &q[b * BLOCK..(b + 1) * BLOCK];
            let mut isum = 0i32;
            for (j, &byte) in blk[4..20].iter().enumerate() {
                isum += (byte & 0x0f) as i32 * qx[j] as i32 + (byte >> 4) as i32 * qx[j + 16] as i32;
            }
            acc += dw * d[b] * isum as f32;
            summs += mw * s[b];
        }
        acc + summs
    }
}

crate::cpu::multiversion! {
    /// Σ over blocks of `d_w · d_x · Σ q_w q_x` (ggml's `vec_dot_q8_0_q8_0`).
    pub fn dot_q8_0(w: &[u8], d: &[f32], q: &[i8]) -> f32 {
        let mut acc = 0.0f32;
        for (b, blk) in w.chunks_exact(34).enumerate() {
            let dw = f16([blk[0], blk[1]]);
            let qx = &q[b * BLOCK..(b + 1) * BLOCK];
            let mut isum = 0i32;
            for (j, &byte) in blk[2..34].iter().enumerate() {
                isum += byte as i8 as i32 * qx[j] as i32;
            }
            acc += dw * d[b] * isum as f32;
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice conversion and the in-place rounding (AVX-512 where present) against
    /// `f32_to_half` and `round_to_f16`, on random bit patterns, the edges and probabilities:
    /// every value but NaN gives the same bits, NaN stays NaN.
    #[test]
    fn slice_to_half_equals_one_at_a_time() {
        let mut s = 0x1234_5679u32;
        let mut x: Vec<f32> = (0..100_003)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                f32::from_bits(s)
            })
            .collect();
        x.extend([
            0.0,
            -0.0,
            65504.0,
            65520.0,
            -65520.0,
            6.0e-8,
            2.9e-8,
            1e-10,
            f32::INFINITY,
        ]);
        let mut got = vec![0u16; x.len()];
        f32_to_half_slice(&x, &mut got);
        for (&v, &h) in x.iter().zip(&got) {
            let want = f32_to_half(v);
            if v.is_nan() {
                assert!(half_to_f32(h).is_nan(), "{v:e}: {h:#x}");
            } else {
                assert_eq!(h, want, "{v:e} ({:#x})", v.to_bits());
            }
        }
        // Rounding in place, on the same values and on probabilities (0 to 1, ties included).
        x.extend((0..=70_000).map(|i| i as f32 / 70_000.0));
        x.extend((0..2048).map(|i| half_to_f32(i as u16) + half_to_f32(1) / 2.0));
        let mut rounded = x.clone();
        round_to_f16_slice(&mut rounded);
        for (&v, &r) in x.iter().zip(&rounded) {
            if v.is_nan() {
                assert!(r.is_nan(), "{v:e}: {r:e}");
            } else {
                assert_eq!(r.to_bits(), round_to_f16(v).to_bits(), "{v:e}");
            }
        }
    }

    /// The one-call-per-row quantizer against the plain one, block by block, bit for bit:
    /// zero blocks, ties, both signs, large and tiny magnitudes.
    #[test]
    fn row_quantization_equals_the_plain_per_block_form() {
        let mut seed = 0x2545_f491u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for case in 0..200 {
            let blocks = 1 + case % 23;
            let mut x: Vec<f32> = (0..blocks * BLOCK)
                .map(|_| ((next() % 20001) as f32 - 10000.0) * 10f32.powi(case as i32 % 9 - 6))
                .collect();
            x[..BLOCK].fill(0.0);
            if blocks > 1 {
                // Values whose scaled form lands on .5: ties go to even.
                for (i, v) in x[BLOCK..2 * BLOCK].iter_mut().enumerate() {
                    *v = if i == 0 {
                        127.0
                    } else {
                        (i as f32 - 16.0) + 0.5
                    };
                }
            }
            let got = quantize_row(&x);
            for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let q: Vec<i8> = xb
                    .iter()
                    .map(|&v| (v * id).round_ties_even() as i32 as i8)
                    .collect();
                let sum: i32 = q.iter().map(|&v| v as i32).sum();
                assert_eq!(
                    &got.q[b * BLOCK..(b + 1) * BLOCK],
                    &q[..],
                    "case {case} block {b}"
                );
                assert_eq!(got.sum[b], sum, "case {case} block {b}");
                assert_eq!(got.d[b].to_bits(), round_to_f16(d).to_bits(), "case {case}");
                let s = round_to_f16(d * sum as f32);
                assert_eq!(got.s[b].to_bits(), s.to_bits(), "case {case} block {b}");
            }
        }
    }

    #[test]
    fn fast_f16_rounding_equals_the_exact_conversion() {
        let mut s = 0x9e37_79b9u32;
        let check = |x: f32| {
            let want = half_to_f32(f32_to_half(x));
            let got = round_to_f16(x);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x:e} ({:#x}): {got:e} vs {want:e}",
                x.to_bits()
            );
        };
        for _ in 0..2_000_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            check(f32::from_bits(s));
        }
        for x in [
            0.0,
            -0.0,
            1.0,
            65504.0,
            65519.0,
            65520.0,
            6.1e-5,
            6.103_515_6e-5,
            5.96e-8,
            2.98e-8,
            1e-30,
        ] {
            check(x);
            check(-x);
        }
        for i in 0..100_000u32 {
            check(i as f32 / 100_000.0);
        }
    }

    #[test]
    fn half_conversions_round_trip_and_round_to_even() {
        for &x in &[0.0f32, 1.0, -2.5, 65504.0, 1e-5, 6.1e-5, 0.333_333] {
            let h = f32_to_half(x);
            assert!((half_to_f32(h) - x).abs() <= x.abs() * 1e-3 + 1e-7, "{x}");
        }
        // 1 + 2^-11 is halfway between two halves: ties go to even (1.0).
        assert_eq!(half_to_f32(f32_to_half(1.0 + 2f32.powi(-11))), 1.0);
        assert_eq!(f32_to_half(1e6), 0x7c00);
    }

    fn q4_1_block(d: f32, m: f32, vals: &[u8; 32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(f32_to_half(d).to_le_bytes());
        b.extend(f32_to_half(m).to_le_bytes());
        for j in 0..16 {
            b.push(vals[j] | (vals[j + 16] << 4));
        }
        b
    }

    #[test]
    fn q4_1_matmul_is_close_to_the_float_product() {
        let (rows, k, n) = (3, 64, 5);
        let mut data = Vec::new();
        for o in 0..n {
            for b in 0..k / BLOCK {
                let vals: [u8; 32] = std::array::from_fn(|j| ((j * 7 + o * 3 + b) % 16) as u8);
                data.extend(q4_1_block(0.01 * (o + 1) as f32, -0.05, &vals));
            }
        }
        let lin = QuantLinear::new(QuantFormat::Q4_1, data, n, k);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0)
            .collect();
        let mut out = vec![0.0; rows * n];
        lin.forward(&x, rows, &mut out);
        let mut w = vec![0.0; k];
        for o in 0..n {
            lin.dequantize_row(o, &mut w);
            for r in 0..rows {
                let exact: f32 = (0..k).map(|i| x[r * k + i] * w[i]).sum();
                let got = out[r * n + o];
                assert!(
                    (got - exact).abs() < 0.02 * (1.0 + exact.abs()),
                    "{r},{o}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn simd_dots_match_the_scalar_dots() {
        let k = 256;
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 7919 % 251) as f32 - 125.0) / 37.0)
            .collect();
        let acts = Activations::new(QuantFormat::Q4_1, &x);
        let Activations::B32(row) = &acts else {
            unreachable!()
        };
        let q4: Vec<u8> = (0..k / BLOCK)
            .flat_map(|b| {
                let vals: [u8; 32] = std::array::from_fn(|j| ((j * 5 + b * 3) % 16) as u8);
                q4_1_block(0.02 + b as f32 * 0.001, -0.1, &vals)
            })
            .collect();
        let q8: Vec<u8> = (0..k / BLOCK)
            .flat_map(|b| {
                let mut blk = f32_to_half(0.01 * (b + 1) as f32).to_le_bytes().to_vec();
                blk.extend((0..32i32).map(|j| ((j * 37 + b as i32 * 11) % 255 - 127) as i8 as u8));
                blk
            })
            .collect();
        let scalar4 = dot_q4_1(&q4, &row.d, &row.s, &row.q);
        let scalar8 = dot_q8_0(&q8, &row.d, &row.q);
        let fast4 = dot(QuantFormat::Q4_1, &q4, &acts);
        let fast8 = dot(QuantFormat::Q8_0, &q8, &acts);
        assert!(
            (fast4 - scalar4).abs() <= 1e-4 * (1.0 + scalar4.abs()),
            "{fast4} vs {scalar4}"
        );
        assert!(
            (fast8 - scalar8).abs() <= 1e-4 * (1.0 + scalar8.abs()),
            "{fast8} vs {scalar8}"
        );
    }

    /// Random-looking blocks of `format` with sane f16 scales.
    fn random_blocks(format: QuantFormat, blocks: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        let mut data: Vec<u8> = (0..blocks * format.block_bytes())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 7) as u8
            })
            .collect();
        let scales: &[usize] = match format {
            QuantFormat::Q4_1 | QuantFormat::Q4K => &[0, 2],
            QuantFormat::Q6K => &[208],
            _ => &[0],
        };
        for (i, blk) in data.chunks_exact_mut(format.block_bytes()).enumerate() {
            for &o in scales {
                let v = 0.003 + 0.001 * ((i + o) % 7) as f32;
                blk[o..o + 2].copy_from_slice(&f32_to_half(v).to_le_bytes());
            }
        }
        data
    }

    /// `dot_rows` (the AVX-512 VNNI multi-row kernels where the CPU has them) against the
    /// plain dot products, for every format and 1 to 10 rows.
    #[test]
    fn multi_row_dots_match_the_scalar_dots() {
        let k = 512;
        for format in [
            QuantFormat::Q4_0,
            QuantFormat::Q4_1,
            QuantFormat::Q5_0,
            QuantFormat::Q8_0,
            QuantFormat::Q4K,
            QuantFormat::Q6K,
        ] {
            let w = random_blocks(format, k / format.block_len(), 7);
            for rows in 1..=10 {
                let acts: Vec<Activations> = (0..rows)
                    .map(|r| {
                        let x: Vec<f32> = (0..k)
                            .map(|i| (((i + 31 * r) * 7919 % 251) as f32 - 125.0) / 37.0)
                            .collect();
                        Activations::new(format, &x)
                    })
                    .collect();
                let mut got = vec![f32::NAN; rows];
                dot_rows(format, &w, &Inputs::new(format, &acts), |r, v| got[r] = v);
                for (r, a) in acts.iter().enumerate() {
                    let want = match (format, a) {
                        (QuantFormat::Q4K, Activations::K(x)) => {
                            crate::quant_blocks::dot_q4_k(&w, &x.d, &x.bsums, &x.q)
                        }
                        (QuantFormat::Q6K, Activations::K(x)) => {
                            crate::quant_blocks::dot_q6_k(&w, &x.d, &x.q)
                        }
                        (QuantFormat::Q4_0, Activations::B32(x)) => {
                            crate::quant_blocks::dot_q4_0(&w, &x.d, &x.q)
                        }
                        (QuantFormat::Q5_0, Activations::B32(x)) => {
                            crate::quant_blocks::dot_q5_0(&w, &x.d, &x.q)
                        }
                        (QuantFormat::Q4_1, Activations::B32(x)) => dot_q4_1(&w, &x.d, &x.s, &x.q),
                        (_, Activations::B32(x)) => dot_q8_0(&w, &x.d, &x.q),
                        _ => unreachable!(),
                    };
                    assert!(
                        (got[r] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{format:?} {rows} rows, row {r}: {} vs {want}",
                        got[r]
                    );
                }
            }
        }
    }

    #[test]
    fn q8_0_dot_of_exact_values_is_exact() {
        // Weights 1..32 at scale 1 against an input that quantizes exactly (values in 127ths).
        let mut blk = f32_to_half(1.0).to_le_bytes().to_vec();
        blk.extend((1..=32).map(|v| v as u8));
        let lin = QuantLinear::new(QuantFormat::Q8_0, blk, 1, 32);
        let x: Vec<f32> = (0..32).map(|i| if i == 31 { 127.0 } else { 1.0 }).collect();
        let mut out = [0.0];
        lin.forward(&x, 1, &mut out);
        let expected: f32 = (1..=31).sum::<i32>() as f32 + 32.0 * 127.0;
        assert_eq!(out[0], expected);
    }

    /// Stacked parts share one quantized input: the same bits as each part quantizing its own,
    /// and a layer of another block length or width is refused.
    #[test]
    fn a_shared_quantized_input_gives_the_same_bits() {
        let (k, rows) = (256, 3);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919 % 251) as f32 - 125.0) / 37.0)
            .collect();
        let layer = |format: QuantFormat, n: usize, seed| {
            QuantLinear::new(
                format,
                random_blocks(format, n * k / format.block_len(), seed),
                n,
                k,
            )
        };
        let parts = [
            layer(QuantFormat::Q4_1, 32, 1),
            layer(QuantFormat::Q5_0, 16, 2),
            layer(QuantFormat::Q8_0, 16, 3),
        ];
        let shared = parts[0].quantize_input(&x, rows);
        for p in &parts {
            assert!(shared.suits(p));
            let n = p.out_features();
            let (mut own, mut from_shared) = (vec![0.0; rows * n], vec![1.0; rows * n]);
            p.forward(&x, rows, &mut own);
            p.forward_quantized(&shared, &mut from_shared);
            assert_eq!(
                own.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                from_shared.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        let q4k = layer(QuantFormat::Q4K, 16, 4);
        assert!(!shared.suits(&q4k));
        let wider = QuantLinear::new(
            QuantFormat::Q8_0,
            random_blocks(QuantFormat::Q8_0, 16, 5),
            1,
            512,
        );
        assert!(!shared.suits(&wider));
    }

    /// Layers stacked in one pass (packed and row layouts, 32- and 256-value formats, one
    /// thread's worth of work and several): the same bits as each layer alone, side by side.
    #[test]
    fn stacked_layers_equal_each_layer_alone() {
        let k = 512;
        let layer = |format: QuantFormat, n: usize, seed| {
            let data = random_blocks(format, n * k / format.block_len(), seed);
            if crate::quant_packed::packs(format, n, k) {
                let mut packed = data;
                crate::quant_packed::pack_in_place(format, n, k, &mut packed);
                QuantLinear::from_shared_packed(format, std::sync::Arc::new(packed), 0, n, k)
            } else {
                QuantLinear::new(format, data, n, k)
            }
        };
        for (rows, n) in [(1, 16), (3, 48), (8, 256), (8, 1024)] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 7919 % 251) as f32 - 125.0) / 37.0)
                .collect();
            let parts = [
                layer(QuantFormat::Q4_1, n, 1),
                layer(QuantFormat::Q4K, n / 2 + 16, 2),
                layer(QuantFormat::Q8_0, 32, 3),
                layer(QuantFormat::Q6K, n, 4),
            ];
            let inputs: Vec<QuantizedInput> =
                parts.iter().map(|p| p.quantize_input(&x, rows)).collect();
            let width: usize = parts.iter().map(QuantLinear::out_features).sum();
            let mut want = vec![0.0f32; rows * width];
            let mut col = 0;
            for (p, input) in parts.iter().zip(&inputs) {
                let w = p.out_features();
                let mut alone = vec![0.0f32; rows * w];
                p.forward_quantized(input, &mut alone);
                for (dst, src) in want.chunks_exact_mut(width).zip(alone.chunks_exact(w)) {
                    dst[col..col + w].copy_from_slice(src);
                }
                col += w;
            }
            let stacked: Vec<(&QuantLinear, &QuantizedInput)> = parts.iter().zip(&inputs).collect();
            let mut got = vec![f32::NAN; rows * width];
            QuantLinear::forward_stacked(&stacked, &mut got);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{rows} rows, {width} columns");
        }
    }

    /// A layer refuses an input quantized for another block length (a panic, not wrong
    /// numbers). Only where panics unwind: wasm32-wasip1 aborts on the first.
    #[cfg(panic = "unwind")]
    #[test]
    #[should_panic(expected = "input quantized for another layer shape")]
    fn a_layer_refuses_an_input_quantized_for_another_shape() {
        let x = vec![0.5f32; 256];
        let q8 = QuantLinear::new(
            QuantFormat::Q8_0,
            random_blocks(QuantFormat::Q8_0, 8, 1),
            1,
            256,
        );
        let q4k = QuantLinear::new(
            QuantFormat::Q4K,
            random_blocks(QuantFormat::Q4K, 1, 2),
            1,
            256,
        );
        q4k.forward_quantized(&q8.quantize_input(&x, 1), &mut [0.0]);
    }
}
