//! The packed layout of Q4_1, Q5_0, Q8_0, Q4_K and Q6_K matrices, and its dense-layer kernels
//! (the K formats' half is in `quant_packed_k.rs`).
//!
//! ggml stores a weight matrix row by row: each output column's blocks in a run. A dot-product
//! kernel on that layout turns every 32-value block of every (input row, output column) pair
//! into a float (convert, scale, add): about six instructions per 32 multiply-adds, which caps
//! prompt processing and batched decoding. The packed layout interleaves 16 output columns
//! ([`GROUP`]) block by block, four bytes at a time, so that one AVX-512 VNNI `vpdpbusd` of a
//! 64-byte weight chunk against four broadcast input bytes advances all 16 columns at once, and
//! a block costs one conversion and scaling per 16 columns.
//!
//! The packed bytes have the size of the ggml bytes (`16 × block bytes` per group and block), so
//! a model file's tensors are packed in place ([`pack_in_place`]) and nothing is copied.
//! Packing is chosen at load time, only where [`packs`] says so (this CPU has the kernels).
//!
//! Each output is, over the blocks in order, `acc = fma(d_w · d_x, Σ q_w q_x, acc)` with an
//! exact integer block sum, plus for Q4_1 the minimums' part `mins = fma(m_w, s_x, mins)` summed
//! apart and added at the end (as ggml's kernels do, so that neither part rounds at the
//! other's magnitude): the scalar
//! `group_dots` and the VNNI kernel compute bit-identical results, and a row's result does
//! not depend on the other rows of the call.

use crate::quant::{half_to_f32, QuantFormat, BLOCK};

/// Output columns interleaved in one packed group (one 32-bit lane each of a 512-bit register).
pub const GROUP: usize = 16;

/// Whether a `[out_features, in_features]` matrix of `format` has a packed layout: Q4_1, Q5_0,
/// Q8_0, Q4_K or Q6_K, in whole groups of columns and whole blocks.
pub fn packable(format: QuantFormat, out_features: usize, in_features: usize) -> bool {
    matches!(
        format,
        QuantFormat::Q4_1
            | QuantFormat::Q5_0
            | QuantFormat::Q8_0
            | QuantFormat::Q4K
            | QuantFormat::Q6K
    ) && out_features > 0
        && out_features.is_multiple_of(GROUP)
        && in_features > 0
        && in_features.is_multiple_of(format.block_len())
}

/// Whether `format` is one of the 256-value K formats (packed by [`crate::quant_packed_k`]).
fn is_k(format: QuantFormat) -> bool {
    format.block_len() != BLOCK
}

/// Whether such a matrix should be packed on this CPU: [`packable`], and the AVX-512 VNNI
/// kernel available (elsewhere the packed layout runs plain code, slower than the row-layout
/// kernels). `KILN_PACK=0` turns packing off, to compare.
pub fn packs(format: QuantFormat, out_features: usize, in_features: usize) -> bool {
    packable(format, out_features, in_features)
        && crate::cpu::has_avx512_vnni()
        && std::env::var("KILN_PACK").as_deref() != Ok("0")
}

/// Bytes of one group's block (16 columns).
pub(crate) fn group_block_bytes(format: QuantFormat) -> usize {
    GROUP * format.block_bytes()
}

/// Where the f16 scales end and the value chunks begin in a group's block.
pub(crate) fn chunks_start(format: QuantFormat) -> usize {
    match format {
        // 16 scales, then 16 minimums.
        QuantFormat::Q4_1 => 64,
        // 16 scales, then the fifth bits: 8 masks of 64 bits.
        QuantFormat::Q5_0 => 96,
        _ => 32,
    }
}

/// Rearranges the ggml bytes of a `[out, in]` matrix into the packed layout, in place (the K
/// formats' layout is described in `quant_packed_k.rs`).
///
/// Group `g`, block `b` starts at byte `(g · blocks + b) · 16 · block_bytes`: the 16 columns'
/// f16 scales, (Q4_1) their 16 f16 minimums, (Q5_0) 8 little-endian 64-bit masks of the fifth
/// bits (bit `4c + i` of mask `g` is column `c`'s value `4g + i`'s), then 64-byte chunks whose
/// 4-byte lane `c` holds column `c`'s bytes `4j..4j+4` of the block's values: for Q4_1 and Q5_0,
/// chunk `j < 4` of the nibble bytes (low nibbles are values `4j..4j+4`, high nibbles values
/// `16+4j..`); for Q8_0, chunk `j < 8` of the values, each stored plus 128 as an unsigned byte.
/// Every 4-value group `g` (values `4g..4g+4`) thus meets one 64-byte weight vector.
///
/// # Panics
/// If the matrix is not [`packable`] or `bytes` is not its size.
pub fn pack_in_place(
    format: QuantFormat,
    out_features: usize,
    in_features: usize,
    bytes: &mut [u8],
) {
    rearrange(format, out_features, in_features, bytes, true);
}

/// Restores the ggml bytes of a matrix packed by [`pack_in_place`], in place.
///
/// # Panics
/// As [`pack_in_place`].
pub fn unpack_in_place(
    format: QuantFormat,
    out_features: usize,
    in_features: usize,
    bytes: &mut [u8],
) {
    rearrange(format, out_features, in_features, bytes, false);
}

/// Packs (or unpacks) a matrix group by group, each through a copy of the group's bytes.
fn rearrange(
    format: QuantFormat,
    out_features: usize,
    in_features: usize,
    bytes: &mut [u8],
    pack: bool,
) {
    let blocks = check_shape(format, out_features, in_features, bytes);
    let (bb, gbb) = (format.block_bytes(), group_block_bytes(format));
    let group_bytes = blocks * gbb;
    let row_bytes = group_bytes / GROUP;
    let mut copy = vec![0u8; group_bytes];
    for group in bytes.chunks_exact_mut(group_bytes) {
        copy.copy_from_slice(group);
        for b in 0..blocks {
            for c in 0..GROUP {
                // Column `c`'s block `b` in ggml's layout, and the group block in the packed one.
                let (col, packed) = (c * row_bytes + b * bb, b * gbb);
                if pack && is_k(format) {
                    crate::quant_packed_k::put_column(
                        format,
                        &copy[col..col + bb],
                        c,
                        &mut group[packed..packed + gbb],
                    );
                } else if is_k(format) {
                    crate::quant_packed_k::take_column(
                        format,
                        &copy[packed..packed + gbb],
                        c,
                        &mut group[col..col + bb],
                    );
                } else if pack {
                    put_column(
                        format,
                        &copy[col..col + bb],
                        c,
                        &mut group[packed..packed + gbb],
                    );
                } else {
                    take_column(
                        format,
                        &copy[packed..packed + gbb],
                        c,
                        &mut group[col..col + bb],
                    );
                }
            }
        }
    }
}

/// Checks the shape and returns the blocks per column.
fn check_shape(
    format: QuantFormat,
    out_features: usize,
    in_features: usize,
    bytes: &[u8],
) -> usize {
    assert!(
        packable(format, out_features, in_features),
        "a {format:?} [{out_features}, {in_features}] matrix has no packed layout"
    );
    let blocks = in_features / format.block_len();
    assert_eq!(
        bytes.len(),
        out_features * blocks * format.block_bytes(),
        "matrix bytes"
    );
    blocks
}

/// Writes column `c`'s ggml block `blk` into the group block `dst`.
fn put_column(format: QuantFormat, blk: &[u8], c: usize, dst: &mut [u8]) {
    let start = chunks_start(format);
    dst[2 * c..2 * c + 2].copy_from_slice(&blk[0..2]);
    let values = match format {
        QuantFormat::Q4_1 => {
            dst[32 + 2 * c..34 + 2 * c].copy_from_slice(&blk[2..4]);
            &blk[4..20]
        }
        QuantFormat::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let shift = 4 * (c % 2);
            for g in 0..8 {
                let byte = &mut dst[32 + 8 * g + c / 2];
                *byte = (*byte & !(0x0f << shift)) | ((((qh >> (4 * g)) & 0x0f) as u8) << shift);
            }
            &blk[6..22]
        }
        _ => &blk[2..34],
    };
    for (j, four) in values.chunks_exact(4).enumerate() {
        let lane = &mut dst[start + 64 * j + 4 * c..][..4];
        for (d, &v) in lane.iter_mut().zip(four) {
            *d = if format == QuantFormat::Q8_0 {
                v ^ 0x80
            } else {
                v
            };
        }
    }
}

/// Reads column `c`'s ggml block out of the group block `src` into `blk`.
fn take_column(format: QuantFormat, src: &[u8], c: usize, blk: &mut [u8]) {
    let start = chunks_start(format);
    blk[0..2].copy_from_slice(&src[2 * c..2 * c + 2]);
    let values = match format {
        QuantFormat::Q4_1 => {
            blk[2..4].copy_from_slice(&src[32 + 2 * c..34 + 2 * c]);
            &mut blk[4..20]
        }
        QuantFormat::Q5_0 => {
            let qh = (0..8).fold(0u32, |qh, g| {
                qh | ((((src[32 + 8 * g + c / 2] >> (4 * (c % 2))) & 0x0f) as u32) << (4 * g))
            });
            blk[2..6].copy_from_slice(&qh.to_le_bytes());
            &mut blk[6..22]
        }
        _ => &mut blk[2..34],
    };
    for (j, four) in values.chunks_exact_mut(4).enumerate() {
        let lane = &src[start + 64 * j + 4 * c..][..4];
        for (d, &v) in four.iter_mut().zip(lane) {
            *d = if format == QuantFormat::Q8_0 {
                v ^ 0x80
            } else {
                v
            };
        }
    }
}

/// Column `r` of a packed matrix (row `r` of the ggml weight), dequantized into `out`.
pub fn dequantize_row(
    format: QuantFormat,
    in_features: usize,
    bytes: &[u8],
    r: usize,
    out: &mut [f32],
) {
    let blocks = in_features / format.block_len();
    let gbb = group_block_bytes(format);
    let group = &bytes[(r / GROUP) * blocks * gbb..][..blocks * gbb];
    let mut blk = [0u8; 210];
    let blk = &mut blk[..format.block_bytes()];
    if is_k(format) {
        for (src, o) in group
            .chunks_exact(gbb)
            .zip(out.chunks_exact_mut(format.block_len()))
        {
            crate::quant_packed_k::take_column(format, src, r % GROUP, blk);
            match format {
                QuantFormat::Q4K => crate::quant_blocks::dequantize_q4_k(blk, o),
                _ => crate::quant_blocks::dequantize_q6_k(blk, o),
            }
        }
        return;
    }
    for (src, o) in group.chunks_exact(gbb).zip(out.chunks_exact_mut(BLOCK)) {
        take_column(format, src, r % GROUP, blk);
        let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        match format {
            QuantFormat::Q4_1 => {
                let m = half_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                for (j, &q) in blk[4..20].iter().enumerate() {
                    o[j] = (q & 0x0f) as f32 * d + m;
                    o[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
            QuantFormat::Q5_0 => crate::quant_blocks::dequantize_q5_0(blk, o),
            _ => {
                for (o, &q) in o.iter_mut().zip(&blk[2..34]) {
                    *o = q as i8 as f32 * d;
                }
            }
        }
    }
}

/// One quantized input row: per-block f16-rounded scales `d`, (Q8_1) `s = d · Σq`, exact
/// integer sums `Σq`, and the values. For the K formats, a Q8_K row: `d` per 256 values,
/// `sum` per 16 values, `s` unused.
#[derive(Clone, Copy)]
pub(crate) struct PackedRow<'a> {
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub sum: &'a [i32],
    pub q: &'a [i8],
}

/// The 16 outputs of one group for each of `rows` (plain code, the VNNI kernel's arithmetic).
pub(crate) fn group_dots(
    format: QuantFormat,
    group: &[u8],
    rows: &[PackedRow<'_>],
    out: &mut [[f32; GROUP]],
) {
    if is_k(format) {
        return crate::quant_packed_k::group_dots(format, group, rows, out);
    }
    let gbb = group_block_bytes(format);
    let start = chunks_start(format);
    for (row, out) in rows.iter().zip(out.iter_mut()) {
        let mut acc = [0.0f32; GROUP];
        let mut mins = [0.0f32; GROUP];
        for (b, blk) in group.chunks_exact(gbb).enumerate() {
            let x = &row.q[b * BLOCK..(b + 1) * BLOCK];
            for (c, (acc, mins)) in acc.iter_mut().zip(&mut mins).enumerate() {
                let dw = half_to_f32(u16::from_le_bytes([blk[2 * c], blk[2 * c + 1]]));
                let mut isum = 0i32;
                match format {
                    QuantFormat::Q4_1 => {
                        for j in 0..4 {
                            for i in 0..4 {
                                let byte = blk[start + 64 * j + 4 * c + i];
                                isum += (byte & 0x0f) as i32 * x[4 * j + i] as i32
                                    + (byte >> 4) as i32 * x[16 + 4 * j + i] as i32;
                            }
                        }
                    }
                    QuantFormat::Q5_0 => {
                        for g in 0..8 {
                            let mask = &blk[32 + 8 * g..40 + 8 * g];
                            for i in 0..4 {
                                let byte = blk[start + 64 * (g % 4) + 4 * c + i];
                                let nibble = if g < 4 { byte & 0x0f } else { byte >> 4 };
                                let high = (mask[c / 2] >> (4 * (c % 2) + i)) & 1;
                                let w = (nibble | high << 4) as i32 - 16;
                                isum += w * x[4 * g + i] as i32;
                            }
                        }
                    }
                    _ => {
                        for j in 0..8 {
                            for i in 0..4 {
                                let w = blk[start + 64 * j + 4 * c + i] as i32 - 128;
                                isum += w * x[4 * j + i] as i32;
                            }
                        }
                    }
                }
                *acc = (dw * row.d[b]).mul_add(isum as f32, *acc);
                if format == QuantFormat::Q4_1 {
                    let mw = half_to_f32(u16::from_le_bytes([blk[32 + 2 * c], blk[33 + 2 * c]]));
                    *mins = mw.mul_add(row.s[b], *mins);
                }
            }
        }
        *out = std::array::from_fn(|c| acc[c] + mins[c]);
    }
}

/// Rows handled together by one kernel call: each group's weights are unpacked once for them.
pub(crate) const TILE: usize = 8;

/// `out[rows, 16]` of one packed group for up to [`TILE`] input rows, with the best kernel.
pub(crate) fn group_tile(
    format: QuantFormat,
    group: &[u8],
    rows: &[PackedRow<'_>],
    out: &mut [[f32; GROUP]],
) {
    if is_k(format) {
        return crate::quant_packed_k::group_tile(format, group, rows, out);
    }
    let blocks = group.len() / group_block_bytes(format);
    for r in rows {
        assert!(r.d.len() >= blocks && r.s.len() >= blocks && r.sum.len() >= blocks);
        assert!(r.q.len() >= blocks * BLOCK);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx512_vnni() {
        macro_rules! run {
            ($f:expr, $n:literal) => {{
                let tile: &[PackedRow<'_>; $n] = rows.try_into().expect("the tile's rows");
                let out: &mut [[f32; GROUP]; $n] =
                    (&mut out[..$n]).try_into().expect("one output per row");
                // SAFETY: has_avx512_vnni() checked the features the kernel enables; every row
                // holds the scales, sums and values of the group's `blocks` blocks (asserted
                // above), and the group is whole blocks of `16 · block_bytes`.
                unsafe { vnni::group_tile::<{ $f }, $n>(group, tile, out) };
            }};
        }
        macro_rules! rows {
            ($f:expr) => {
                match rows.len() {
                    8 => run!($f, 8),
                    7 => run!($f, 7),
                    6 => run!($f, 6),
                    5 => run!($f, 5),
                    4 => run!($f, 4),
                    3 => run!($f, 3),
                    2 => run!($f, 2),
                    1 => run!($f, 1),
                    _ => unreachable!("at most TILE rows"),
                }
            };
        }
        // One kernel per format: the compiler drops the other formats' registers and branches.
        match format {
            QuantFormat::Q4_1 => rows!(vnni::SEL_Q4_1),
            QuantFormat::Q5_0 => rows!(vnni::SEL_Q5_0),
            QuantFormat::Q8_0 => rows!(vnni::SEL_Q8_0),
            other => unreachable!("{other:?} has no packed layout"),
        }
        return;
    }
    group_dots(format, group, rows, out);
}

/// The AVX-512 VNNI kernel.
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni {
    use super::{chunks_start, group_block_bytes, PackedRow, GROUP};
    use crate::cpu::PrefetchTarget;
    use crate::quant::{QuantFormat, BLOCK};
    use std::arch::x86_64::*;

    /// How far ahead of the block in hand the kernels fetch weights, in bytes.
    ///
    /// With several rows a block costs enough arithmetic that the hardware prefetcher falls
    /// behind the weights streaming in from memory (a model's layers do not fit in the caches).
    /// Measured with the `quant_stream` bench's layers (a whole model's weights, 96 MB and
    /// 249 MB), with a temporary patch that switched prefetching on and off at alternate steps
    /// in one process, so that the machine's drift hit both (2026-12-03, an AMD EPYC; the
    /// outputs are in `bench/results/kernels-session8-2026-12-03.md`): 8 rows, SmolLM2-135M
    /// shapes 14.2 → 11.5 and 13.6 → 11.1 ms per step, Gemma 3 270M shapes 23.8 → 18.3 and
    /// 20.6 → 17.4; 4 rows within 10% either way; 1, 2, 4 and 8 KiB ahead within 5% of each
    /// other. On an Intel Xeon one-row tiles gain too, and most at 8 KiB ahead (SmolLM2
    /// one-stream decoding, medians of 18-54 requests: 354 tokens/s at 4 KiB, 371 at 8, 358 at
    /// 16, 342 at 2; `bench/results/kernels-session13-2026-12-03.md`); smaller tiles fetch ahead
    /// only where [`fetch_plan`] says so.
    pub(crate) const PREFETCH_AHEAD: usize = 8192;

    /// Whether and where an `rows`-row tile fetches weights ahead: from 2 rows always, one row
    /// where [`crate::cpu::prefetch_one_row`] says it pays on this CPU; into the cache
    /// [`crate::cpu::prefetch_target`] names. Tiles of 2 and 3 rows fetched ahead only on Intel
    /// CPUs before; on an AMD EPYC, filling L2, they gain as the larger tiles do (a whole
    /// model's 2-row products 11-17% faster, `bench/results/kernels-session18-2026-12-04.md`).
    #[inline(always)]
    pub(crate) fn fetch_plan(rows: usize) -> Option<PrefetchTarget> {
        (rows >= 2 || crate::cpu::prefetch_one_row()).then(crate::cpu::prefetch_target)
    }

    /// Asks the CPU to bring the `len` bytes [`PREFETCH_AHEAD`] past `at` into the cache
    /// `target` names (a hint: the address, formed with wrapping arithmetic, is never
    /// dereferenced).
    #[inline(always)]
    pub(crate) fn prefetch(at: *const u8, len: usize, target: PrefetchTarget) {
        let ahead = at.wrapping_add(PREFETCH_AHEAD);
        let mut line = 0;
        while line < len {
            let p = ahead.wrapping_add(line) as *const i8;
            // SAFETY: every x86_64 CPU has SSE, whose `prefetcht0` and `prefetcht1` these are,
            // and the kiln targets compile it in; a prefetch hint reads nothing the program
            // sees and cannot fault, whatever the address.
            unsafe {
                match target {
                    PrefetchTarget::L1 => _mm_prefetch::<_MM_HINT_T0>(p),
                    PrefetchTarget::L2 => _mm_prefetch::<_MM_HINT_T1>(p),
                }
            }
            line += 64;
        }
    }

    /// Kernel selector for Q4_1 (also the tile kernels' in `quant_amx`).
    pub(crate) const SEL_Q4_1: u8 = 0;
    /// Kernel selector for Q5_0.
    pub(crate) const SEL_Q5_0: u8 = 1;
    /// Kernel selector for Q8_0.
    pub(crate) const SEL_Q8_0: u8 = 2;

    /// The format a kernel selector stands for.
    pub(crate) const fn selected(sel: u8) -> QuantFormat {
        match sel {
            SEL_Q4_1 => QuantFormat::Q4_1,
            SEL_Q5_0 => QuantFormat::Q5_0,
            SEL_Q8_0 => QuantFormat::Q8_0,
            _ => panic!("no such kernel"),
        }
    }

    /// A group block's weights as 8 vectors of unsigned bytes, vector `g` holding values
    /// `4g..4g+4` of each of the 16 columns as stored (Q5_0 plus 16, Q8_0 plus 128);
    /// `start` is where the format's value chunks begin, `mask` is 0x0f and `bit4` 0x10 in
    /// every byte (hoisted by the callers).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW, and `blk` must point at a whole group block of the
    /// format `F` selects.
    #[inline(always)]
    pub(crate) unsafe fn unpack_block<const F: u8>(
        blk: *const u8,
        start: usize,
        mask: __m512i,
        bit4: __m512i,
    ) -> [__m512i; 8] {
        // SAFETY: the caller's duty: the loads read the block's 64-byte chunks from `start`
        // and (Q5_0) its eight 8-byte masks from byte 32, all inside the group block.
        unsafe {
            let mut w = [_mm512_setzero_si512(); 8];
            if F == SEL_Q8_0 {
                for (j, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(blk.add(start + 64 * j) as *const __m512i);
                }
                return w;
            }
            for j in 0..4 {
                let raw = _mm512_loadu_si512(blk.add(start + 64 * j) as *const __m512i);
                w[j] = _mm512_and_si512(raw, mask);
                w[j + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), mask);
            }
            if F == SEL_Q5_0 {
                // Bit `4c + i` of mask `g` is byte `4c + i`'s fifth bit (16).
                for (g, w) in w.iter_mut().enumerate() {
                    let bits = (blk.add(32 + 8 * g) as *const u64).read_unaligned();
                    let high = _mm512_and_si512(_mm512_movm_epi8(bits), bit4);
                    *w = _mm512_or_si512(*w, high);
                }
            }
            w
        }
    }

    /// One group's 16 outputs for `R` rows, for the format `F` selects.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VNNI, FMA and F16C; `group` is whole group blocks of
    /// the format and every row holds `blocks` scales and sums and `32 blocks`
    /// values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn group_tile<const F: u8, const R: usize>(
        group: &[u8],
        rows: &[PackedRow<'_>; R],
        out: &mut [[f32; GROUP]; R],
    ) {
        let format = selected(F);
        let gbb = group_block_bytes(format);
        let blocks = group.len() / gbb;
        let start = chunks_start(format);
        let q4 = F == SEL_Q4_1;
        // SAFETY: block `b < blocks` spans `group[b·gbb .. (b+1)·gbb]`: 32 bytes of scales
        // (then 32 of minimums for Q4_1, or 64 of fifth-bit masks for Q5_0), then 4 (Q4_1,
        // Q5_0) or 8 (Q8_0) 64-byte chunks, all inside it; row reads
        // are `q[32 b .. 32 b + 32]` and index `b` of the scale and sum slices, which the caller
        // guarantees exist; each store writes one row's `[f32; GROUP]` (16 values) of `out`;
        // the features are the caller's duty.
        unsafe {
            let mask = _mm512_set1_epi8(0x0f);
            let bit4 = _mm512_set1_epi8(0x10);
            let mut acc = [_mm512_setzero_ps(); R];
            let mut mins = [_mm512_setzero_ps(); R];
            let fetch = fetch_plan(R);
            for b in 0..blocks {
                let blk = group.as_ptr().add(b * gbb);
                if let Some(target) = fetch {
                    prefetch(blk, gbb, target);
                }
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let w = unpack_block::<F>(blk, start, mask, bit4);
                for (r, row) in rows.iter().enumerate() {
                    let x = row.q.as_ptr().add(b * BLOCK) as *const i32;
                    // Q5_0 weights are stored plus 16 and Q8_0 weights plus 128: start from
                    // -16 · Σx or -128 · Σx.
                    let mut isum = match F {
                        SEL_Q4_1 => _mm512_setzero_si512(),
                        SEL_Q5_0 => _mm512_set1_epi32(-16 * *row.sum.get_unchecked(b)),
                        _ => _mm512_set1_epi32(-128 * *row.sum.get_unchecked(b)),
                    };
                    for (j, w) in w.iter().enumerate() {
                        let xj = _mm512_set1_epi32(x.add(j).read_unaligned());
                        isum = _mm512_dpbusd_epi32(isum, *w, xj);
                    }
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*row.d.get_unchecked(b)));
                    acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[r]);
                }
            }
            if q4 {
                // The minimums' part, in a pass of its own: in the loop above its eight
                // accumulators would push the registers past 32 and spill (measured: eight
                // Q4_1 rows took 2.9x the time of four).
                for b in 0..blocks {
                    let blk = group.as_ptr().add(b * gbb);
                    let mw = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
                    for (r, row) in rows.iter().enumerate() {
                        mins[r] =
                            _mm512_fmadd_ps(mw, _mm512_set1_ps(*row.s.get_unchecked(b)), mins[r]);
                    }
                }
            }
            for ((o, a), m) in out.iter_mut().zip(acc).zip(mins) {
                _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(a, m));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{f32_to_half, QuantLinear};
    use std::sync::Arc;

    /// A `[out, in]` matrix of random ggml blocks with scales (and Q4_1 minimums) near ±0.01.
    fn random_matrix(format: QuantFormat, out: usize, inp: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let bytes = out * inp / format.block_len() * format.block_bytes();
        let mut data: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
        let scales: &[usize] = match format {
            QuantFormat::Q4_1 | QuantFormat::Q4K => &[0, 2],
            QuantFormat::Q6K => &[208],
            _ => &[0],
        };
        for blk in data.chunks_exact_mut(format.block_bytes()) {
            for &at in scales {
                let v = (next() % 2000) as f32 / 1e5 - 0.01;
                blk[at..at + 2].copy_from_slice(&f32_to_half(v).to_le_bytes());
            }
        }
        data
    }

    fn input(rows: usize, k: usize, seed: usize) -> Vec<f32> {
        (0..rows * k)
            .map(|i| (((i + 31 * seed) * 7919 % 251) as f32 - 125.0) / 37.0)
            .collect()
    }

    const FORMATS: [QuantFormat; 5] = [
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
    ];

    #[test]
    fn packing_round_trips_and_keeps_every_row() {
        for format in FORMATS {
            let (n, k) = (48, if is_k(format) { 512 } else { 96 });
            let ggml = random_matrix(format, n, k, 3);
            let mut packed = ggml.clone();
            pack_in_place(format, n, k, &mut packed);
            assert_ne!(packed, ggml, "{format:?}: packing moved nothing");
            let rows = QuantLinear::new(format, ggml.clone(), n, k);
            for r in 0..n {
                let (mut want, mut got) = (vec![0.0; k], vec![0.0; k]);
                rows.dequantize_row(r, &mut want);
                dequantize_row(format, k, &packed, r, &mut got);
                assert_eq!(got, want, "{format:?} row {r}");
            }
            unpack_in_place(format, n, k, &mut packed);
            assert_eq!(
                packed, ggml,
                "{format:?}: unpacking restores the ggml bytes"
            );
        }
    }

    /// The VNNI kernel (where this CPU has it) against the plain code: bit-identical.
    #[test]
    fn tile_kernel_equals_the_plain_group_dots() {
        for format in FORMATS {
            let k = if is_k(format) { 512 } else { 320 };
            let mut w = random_matrix(format, GROUP, k, 5);
            pack_in_place(format, GROUP, k, &mut w);
            let x = input(TILE, k, 1);
            // Q8_0/Q8_1 rows, or Q8_K rows (`d` per 256 values, `sum` per 16) for K formats.
            let acts: Vec<_> = x
                .chunks_exact(k)
                .map(|x| match is_k(format) {
                    true => {
                        let r = crate::quant_blocks::quantize_row_q8_k(x);
                        (r.d, Vec::new(), r.bsums, r.q)
                    }
                    false => crate::quant::quantize_row_for_tests(x),
                })
                .collect();
            let rows: Vec<PackedRow<'_>> = acts
                .iter()
                .map(|(d, s, sum, q)| PackedRow { d, s, sum, q })
                .collect();
            for n in 1..=TILE {
                let mut want = vec![[0.0; GROUP]; n];
                let mut got = vec![[f32::NAN; GROUP]; n];
                group_dots(format, &w, &rows[..n], &mut want);
                group_tile(format, &w, &rows[..n], &mut got);
                assert_eq!(got, want, "{format:?}, {n} rows");
            }
        }
    }

    /// A packed layer against the same layer on ggml rows, for 1 to 140 input rows (tiles and
    /// a remainder, one thread and several, and where the CPU has AMX the tile kernels' row
    /// counts): within float rounding, and each row's outputs independent of the other rows of
    /// the call (bit for bit, whichever kernel the row count picks).
    #[test]
    fn packed_layer_matches_the_row_layout() {
        for format in FORMATS {
            let (n, k) = (64 * 16, 256);
            let ggml = random_matrix(format, n, k, 9);
            let mut packed = ggml.clone();
            pack_in_place(format, n, k, &mut packed);
            let rows = QuantLinear::new(format, ggml, n, k);
            let fast = QuantLinear::from_shared_packed(format, Arc::new(packed), 0, n, k);
            let x = input(140, k, 2);
            let mut alone = vec![0.0; n];
            fast.forward(&x[..k], 1, &mut alone);
            // 140 rows of 256 are past the value count from which the input rows are
            // quantized on several threads.
            for m in [1, 3, 8, 19, 70, 140] {
                let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
                rows.forward(&x[..m * k], m, &mut want);
                fast.forward(&x[..m * k], m, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{format:?}, {m} rows, output {i}: {g} vs {w}"
                    );
                }
                assert_eq!(got[..n], alone[..], "{format:?}: row 0 alone and among {m}");
            }
        }
    }
}
