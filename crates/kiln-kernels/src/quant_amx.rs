//! Intel AMX tile kernels for the packed Q4_1, Q5_0 and Q8_0 layouts on prompt-sized inputs.
//!
//! One tile instruction (`tdpbssd`) multiplies 16 input rows by one 32-value block of a packed
//! group's 16 columns: 8192 byte products into exact 32-bit sums, where the VNNI kernel
//! spends 8 `vpdpbusd` per row. What is left on the vector units is the per-block scaling,
//! done exactly as the VNNI kernel does it (`acc = fma(d_w · d_x, Σ, acc)` block by block,
//! the Q4_1 minimums summed apart and added at the end), so the results are the VNNI
//! kernel's (and the plain `group_dots`') bits, whichever kernel a layer call picks.
//!
//! Stable Rust has no AMX intrinsics or feature detection yet: the tile instructions are inline
//! assembly, the CPU is asked with `cpuid`, and Linux must grant the process the tile state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) before the first tile instruction.

use crate::quant::{QuantFormat, BLOCK};
use crate::quant_packed::{PackedRow, GROUP};

/// Input rows in one tile.
const TILE_ROWS: usize = 16;

/// Blocks whose sums the tile kernel forms and scales at a time. The sums of two chunks (one
/// being scaled while the next is formed) must stay in the L1 cache beside the group's weight
/// tiles: with two buffers of all 18 blocks (36 KiB, SmolLM2's 576 inputs) the tile work alone
/// took 22 ns per block and tile against 11.5 with one such buffer, which stays in L1 (scaling
/// left out, one thread);
/// with the scaling, chunks of 2 blocks ran a 256-row layer in 1150 µs, of 4 in 1210-1240 and
/// of 8 in 1255-1280.
const CHUNK: usize = 2;

/// Rows whose sums the tile kernel scales together.
const HALF: usize = 8;

/// One tile of rows' 16 integer sums, aligned for the tile store and the vector loads.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct TileSums([[i32; GROUP]; TILE_ROWS]);

/// Bytes of one block's input tile: 16 rows of 32 values.
const A_TILE_BYTES: usize = TILE_ROWS * BLOCK;

/// Bytes of one block's weight tile: 8 rows of 16 columns × 4 values.
const B_TILE_BYTES: usize = 512;

/// Whether the tile kernels may run: the VNNI kernels may ([`crate::cpu::has_avx512_vnni`]),
/// the CPU has AMX-TILE and AMX-INT8, Linux granted the tile state, and `KILN_AMX=0` does not
/// turn them off.
pub(crate) fn available() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        {
            crate::cpu::has_avx512_vnni()
                && std::env::var("KILN_AMX").as_deref() != Ok("0")
                && cpu_has_amx_int8()
                && request_tile_state()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
        {
            false
        }
    })
}

/// Whether a packed layer of `format` takes `rows` input rows through the tile kernels: it has
/// one, they are [`available`], and the rows are enough to pay for them.
///
/// `cargo bench -p kiln-kernels --bench quant`, 2 threads, SmolLM2 and Gemma shapes, VNNI
/// time over tile time (2026-12-03, `bench/results/kernels-session11-2026-12-03.md`): Q4_1
/// 0.87-1.07x at 16 rows, 0.90-1.12x at 32, 1.06-1.14x at 64, 1.13-1.31x at 256; Q5_0 1.17x,
/// 1.44-1.69x, 1.30x, 1.68x; Q8_0 (a 49152-column layer) 1.07x, 1.14-1.23x, 1.49x and 0.87x
/// at 256 (a shape a prompt never has: only its last row needs logits). Q4_1's VNNI kernel
/// needs no offset work and the tile kernel's scaling has the minimums' part on top, so Q4_1
/// waits for 64 rows.
pub(crate) fn pays(format: QuantFormat, rows: usize) -> bool {
    min_rows(format).is_some_and(|min| rows >= min) && available()
}

/// The fewest rows for which `format`'s tile kernel pays (see [`pays`]), if it has one.
fn min_rows(format: QuantFormat) -> Option<usize> {
    match format {
        QuantFormat::Q4_1 => Some(64),
        QuantFormat::Q5_0 | QuantFormat::Q8_0 => Some(TILE_ROWS),
        _ => None,
    }
}

/// CPUID leaf 7: AMX-TILE (EDX bit 24) and AMX-INT8 (EDX bit 25).
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn cpu_has_amx_int8() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // `cpuid` exists on every x86_64 CPU; leaf 7 is read only where the CPU has it.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx & (1 << 24) != 0 && edx & (1 << 25) != 0
}

/// Asks Linux for the AMX tile data state for this process (all its threads); false where
/// the kernel refuses (too old, or the state is off).
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` takes two integers and
    // touches no memory of ours; it only enlarges the state the kernel saves for our threads.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// A zeroed buffer of `len` elements (and spare ones) and the offset of its first element on a
/// 64-byte boundary, from where the `len` elements are used: tile rows that straddle cache
/// lines load slower. For the byte types used here the boundary is always within the spare
/// 64 elements (`min` only keeps the slice in bounds otherwise, unaligned).
fn aligned<T: Copy + Default>(len: usize) -> (Vec<T>, usize) {
    let spare = 64 / std::mem::size_of::<T>();
    let v = vec![T::default(); len + spare];
    let at = v.as_ptr().align_offset(64).min(spare);
    (v, at)
}

/// The input rows of one layer call gathered for the tiles: the values row after row, padded
/// with zero rows to whole tiles, and each row's per-block scales and `d · Σq`.
pub(crate) struct TileInput {
    /// Real rows (the padding rows after them are zero).
    rows: usize,
    /// 32-value blocks per row.
    blocks: usize,
    /// The values, from `q_at` (64-byte aligned), tile by tile and block by block: tile `i`'s
    /// block `b` is the 16 rows' 32 values in a run of [`A_TILE_BYTES`] at
    /// `(i · blocks + b) · A_TILE_BYTES` (a tile load then reads 8 whole cache lines in order,
    /// not 16 lines a row apart).
    q: Vec<i8>,
    /// Where the values start in `q`.
    q_at: usize,
    /// `[padded rows, blocks]` scales.
    d: Vec<f32>,
    /// `[padded rows, blocks]` `d · Σq` (Q8_1 inputs of Q4_1 layers).
    s: Vec<f32>,
}

impl TileInput {
    /// Gathers `rows` (each holding `blocks` blocks) for the tile kernels.
    ///
    /// # Panics
    /// If a row holds fewer blocks.
    pub(crate) fn gather(rows: &[PackedRow<'_>], blocks: usize) -> Self {
        let padded = rows.len().next_multiple_of(TILE_ROWS);
        let k = blocks * BLOCK;
        let (q, q_at) = aligned(padded * k);
        let mut x = TileInput {
            rows: rows.len(),
            blocks,
            q,
            q_at,
            d: vec![0.0; padded * blocks],
            s: vec![0.0; padded * blocks],
        };
        for (r, row) in rows.iter().enumerate() {
            for (b, values) in row.q[..k].chunks_exact(BLOCK).enumerate() {
                let at =
                    q_at + ((r / TILE_ROWS) * blocks + b) * A_TILE_BYTES + (r % TILE_ROWS) * BLOCK;
                x.q[at..at + BLOCK].copy_from_slice(values);
            }
            x.d[r * blocks..(r + 1) * blocks].copy_from_slice(&row.d[..blocks]);
            if !row.s.is_empty() {
                x.s[r * blocks..(r + 1) * blocks].copy_from_slice(&row.s[..blocks]);
            }
        }
        x
    }

    /// Rows including the padding (whole tiles).
    pub(crate) fn padded_rows(&self) -> usize {
        self.d.len() / self.blocks.max(1)
    }
}

/// Reusable memory of one thread's tile kernel calls.
#[derive(Default)]
pub(crate) struct TileScratch {
    /// The group's weight tiles, [`B_TILE_BYTES`] per block, from `weights_at` (64-byte
    /// aligned).
    weights: Vec<u8>,
    /// Where the weight tiles start in `weights`.
    weights_at: usize,
    /// The group's scales, per block.
    scales: Vec<[f32; GROUP]>,
    /// The group's Q4_1 minimums, per block.
    minimums: Vec<[f32; GROUP]>,
    /// Two chunks of blocks' sums for a tile of rows (one being scaled while the tile unit
    /// forms the other).
    sums: Vec<TileSums>,
}

/// The outputs of consecutive packed groups of `format` (16 columns each) for every row of
/// `x`, bit-identical to `quant_packed::group_dots`: group `g`'s go to
/// `out[r][col + 16 g..col + 16 g + 16]`.
///
/// # Panics
/// If the tile kernels are not [`available`], `format` has none, `groups` is not whole groups
/// of `x`'s blocks of `format`, or `out` has fewer rows or a row too short.
pub(crate) fn groups_rows(
    format: QuantFormat,
    groups: &[u8],
    x: &TileInput,
    scratch: &mut TileScratch,
    out: &mut [&mut [f32]],
    col: usize,
) {
    assert!(available() && min_rows(format).is_some(), "no tile kernel");
    let group_bytes = x.blocks * GROUP * format.block_bytes();
    assert!(
        group_bytes > 0 && groups.len().is_multiple_of(group_bytes),
        "group bytes"
    );
    assert!(out.len() >= x.rows, "output rows");
    if scratch.weights.len() < scratch.weights_at + x.blocks * B_TILE_BYTES {
        (scratch.weights, scratch.weights_at) = aligned(x.blocks * B_TILE_BYTES);
    }
    let weights = &mut scratch.weights[scratch.weights_at..][..x.blocks * B_TILE_BYTES];
    scratch
        .sums
        .resize(2 * CHUNK, TileSums([[0; GROUP]; TILE_ROWS]));
    scratch.scales.resize(x.blocks, [0.0; GROUP]);
    scratch.minimums.resize(x.blocks, [0.0; GROUP]);
    let out = &mut out[..x.rows];
    // Released when dropped, also if a panic unwinds through here.
    let _tiles = amx::Configured::new();
    for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
        macro_rules! run {
            ($f:expr) => {
                // SAFETY: available() checked AVX-512 F/BW/VNNI, FMA, F16C, AMX-TILE/INT8 and
                // the tile state, and the tiles are configured (above); `group` is `x.blocks`
                // group blocks of the format, `x` holds whole tiles of rows of `x.blocks`
                // blocks (`gather`), and the scratch has one weight tile, scale and minimum
                // row per block and two chunks of sums.
                unsafe {
                    amx::group_rows::<{ $f }>(
                        group,
                        x,
                        weights,
                        &mut scratch.sums,
                        &mut scratch.scales,
                        &mut scratch.minimums,
                        out,
                        col + g * GROUP,
                    )
                }
            };
        }
        match format {
            QuantFormat::Q4_1 => run!(amx::SEL_Q4_1),
            QuantFormat::Q5_0 => run!(amx::SEL_Q5_0),
            _ => run!(amx::SEL_Q8_0),
        }
    }
}

/// The tile kernel.
mod amx {
    use super::{TileInput, TileSums, A_TILE_BYTES, B_TILE_BYTES, CHUNK, GROUP, HALF, TILE_ROWS};
    use crate::quant::BLOCK;
    use crate::quant_packed::{chunks_start, group_block_bytes};
    use std::arch::asm;
    use std::arch::x86_64::*;

    pub(super) use crate::quant_packed::vnni::{
        selected, unpack_block, SEL_Q4_1, SEL_Q5_0, SEL_Q8_0,
    };

    /// The tile configuration (palette 1), two sets for two blocks at a time: tiles 0 and 1 the
    /// 16 × 16 sums (64-byte rows), tiles 2 and 3 the 16 input rows' 32 bytes of a block, tiles
    /// 4 and 5 the block's 8 rows of 16 columns × 4 values (a tile left unconfigured faults).
    fn config() -> [u8; 64] {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut tile = |t: usize, rows: u8, bytes: u16| {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&bytes.to_le_bytes());
            c[48 + t] = rows;
        };
        for pair in 0..2 {
            tile(pair, 16, 64);
            tile(2 + pair, 16, BLOCK as u16);
            tile(4 + pair, 8, 64);
        }
        c
    }

    /// This thread's tiles configured ([`config`]) while it lives; dropping it returns them to
    /// their initial state.
    pub(super) struct Configured(());

    impl Configured {
        /// Loads the tile configuration on this thread.
        ///
        /// # Panics
        /// If the tile kernels are not [`super::available`].
        pub(super) fn new() -> Self {
            assert!(super::available(), "no tile kernel");
            let cfg = config();
            // SAFETY: available() checked AMX-TILE and that Linux granted the tile state;
            // `ldtilecfg` reads the 64 bytes of `cfg`, a valid palette-1 configuration (reserved
            // bytes zero, at most 16 rows and 64 bytes a row per tile).
            unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly)) };
            Configured(())
        }
    }

    impl Drop for Configured {
        fn drop(&mut self) {
            // SAFETY: `new` checked AMX-TILE and the tile state; `tilerelease` touches no memory.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// The integer sums of a block's input tile at `a` (16 rows of 32 values, `stride` = 32
    /// bytes apart) and (if `pair`) the next block's (the next 512 bytes) against the weight tile(s)
    /// at `w`, stored to `s` (and the entry after it).
    ///
    /// # Safety
    /// The tiles are [`Configured`]; `a` holds one (a pair: two) input tiles, `w`
    /// one (two) weight tiles, and `s` one (two) entries.
    #[inline(always)]
    unsafe fn products(a: *const i8, stride: usize, w: *const u8, s: *mut TileSums, pair: bool) {
        // SAFETY: the caller's duty (see above); the tile instructions touch only these bytes.
        unsafe {
            // The operands both forms share.
            macro_rules! tile_asm {
                ($($line:literal),*) => {
                    asm!(
                        $($line),*,
                        a = in(reg) a,
                        stride = in(reg) stride,
                        w = in(reg) w,
                        row = in(reg) 64usize,
                        s = in(reg) s,
                        options(nostack),
                    )
                };
            }
            if pair {
                tile_asm!(
                    "tileloadd tmm2, [{a} + {stride}*1]",
                    "tileloadd tmm4, [{w} + {row}*1]",
                    "tileloadd tmm3, [{a} + {stride}*1 + 512]",
                    "tileloadd tmm5, [{w} + {row}*1 + 512]",
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tdpbssd tmm0, tmm2, tmm4",
                    "tdpbssd tmm1, tmm3, tmm5",
                    "tilestored [{s} + {row}*1], tmm0",
                    "tilestored [{s} + {row}*1 + 1024], tmm1"
                );
            } else {
                tile_asm!(
                    "tileloadd tmm2, [{a} + {stride}*1]",
                    "tileloadd tmm4, [{w} + {row}*1]",
                    "tilezero tmm0",
                    "tdpbssd tmm0, tmm2, tmm4",
                    "tilestored [{s} + {row}*1], tmm0"
                );
            }
        }
    }

    /// Every real row's 16 outputs of one group, for the format `F` selects, into
    /// `out[r][col..col + 16]`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW, FMA, F16C, AMX-TILE and AMX-INT8, the process the tile
    /// state and this thread the tiles [`Configured`]; `group` is `x.blocks` whole group blocks of the format, `weights` holds
    /// `x.blocks · B_TILE_BYTES` bytes, `sums` `2 · CHUNK` entries and `scales` and
    /// `minimums` `x.blocks`.
    // Index loops over the blocks: written with iterators (`enumerate().take().skip()`), a
    // 256-row layer took 1800 µs instead of 1150 (one thread).
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn group_rows<const F: u8>(
        group: &[u8],
        x: &TileInput,
        weights: &mut [u8],
        sums: &mut [TileSums],
        scales: &mut [[f32; GROUP]],
        minimums: &mut [[f32; GROUP]],
        out: &mut [&mut [f32]],
        col: usize,
    ) {
        let format = selected(F);
        let gbb = group_block_bytes(format);
        let (blocks, k) = (x.blocks, x.blocks * BLOCK);
        let start = chunks_start(format);
        let padded = x.padded_rows();
        assert!(group.len() >= blocks * gbb && weights.len() >= blocks * B_TILE_BYTES);
        assert!(sums.len() >= 2 * CHUNK && scales.len() >= blocks && minimums.len() >= blocks);
        assert!(x.q.len() >= x.q_at + padded * k);
        assert!(x.d.len() >= padded * blocks && x.s.len() >= padded * blocks);
        assert!(padded.is_multiple_of(TILE_ROWS));
        let tiles = padded / TILE_ROWS;
        let sums = sums.as_mut_ptr();
        // SAFETY: block `b < blocks` of the group spans `group[b·gbb .. (b+1)·gbb]` (scales,
        // Q4_1 minimums or Q5_0 masks, then 64-byte chunks from `start`); weight tile `b` is
        // `weights[b·512 .. (b+1)·512]`; tile `i < tiles` of input rows reads its block `b`
        // as `x.q[q_at + (i · blocks + b) · 512 ..][..512]` (and the next 512 for a pair
        // `b + 1 < blocks`), inside `padded · k` bytes from `q_at`, and the sums of
        // block `b` of chunk `c` (blocks `first = c · CHUNK .. end`, `end <= blocks`) at step
        // `s` go to entry `(s % 2) · CHUNK + b - first` (and the next for a pair, `b + 1 <
        // end`) of `sums`, below `2 · CHUNK`; the scalar reads index rows below `padded` and
        // blocks below `blocks` (all asserted above), and the outputs are stored through
        // bounds-checked slices; the features and tile state are the caller's duty.
        unsafe {
            // The weights as tile rows of signed bytes: row `g` holds values `4g..4g+4` of each
            // column (the integer sums are those of the VNNI kernel, which multiplies the
            // stored unsigned bytes and subtracts the offsets' part).
            let mask = _mm512_set1_epi8(0x0f);
            let bit4 = _mm512_set1_epi8(0x10);
            let top = _mm512_set1_epi8(i8::MIN);
            for b in 0..blocks {
                let blk = group.as_ptr().add(b * gbb);
                let dst = weights.as_mut_ptr().add(b * B_TILE_BYTES);
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                _mm512_storeu_ps(scales[b].as_mut_ptr(), dw);
                if F == SEL_Q4_1 {
                    let mw = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
                    _mm512_storeu_ps(minimums[b].as_mut_ptr(), mw);
                }
                // As stored (unsigned), then as signed values: Q8_0's bytes (plus 128) with the
                // top bit flipped, Q5_0's five bits (plus 16) minus 16.
                let mut w = unpack_block::<F>(blk, start, mask, bit4);
                for w in w.iter_mut() {
                    if F == SEL_Q8_0 {
                        *w = _mm512_xor_si512(*w, top);
                    } else if F == SEL_Q5_0 {
                        *w = _mm512_sub_epi8(*w, bit4);
                    }
                }
                for (j, w) in w.iter().enumerate() {
                    _mm512_storeu_si512(dst.add(64 * j) as *mut __m512i, *w);
                }
            }
            let w = weights.as_ptr();
            let tile_at =
                |i: usize, b: usize| x.q.as_ptr().add(x.q_at + (i * blocks + b) * A_TILE_BYTES);
            // Steps of (tile of rows, chunk of blocks), in order; step `s`'s sums go to half
            // `s % 2` of `sums`.
            let chunks = blocks.div_ceil(CHUNK);
            let steps = tiles * chunks;
            let step_products = |step: usize| {
                let (i, c) = (step / chunks, step % chunks);
                let buf = sums.add((step % 2) * CHUNK);
                let first = c * CHUNK;
                let end = (first + CHUNK).min(blocks);
                let mut b = first;
                while b < end {
                    // `buf` holds the chunk's blocks from `first`.
                    let (a, wt) = (tile_at(i, b), w.add(b * B_TILE_BYTES));
                    products(a, BLOCK, wt, buf.add(b - first), b + 1 < end);
                    b += 2;
                }
            };
            step_products(0);
            for i in 0..tiles {
                let t0 = i * TILE_ROWS;
                let rows: [usize; TILE_ROWS] = std::array::from_fn(|t| (t0 + t) * blocks);
                let mut acc = [_mm512_setzero_ps(); TILE_ROWS];
                for c in 0..chunks {
                    let step = i * chunks + c;
                    // The next step's sums are formed while this one's are scaled (the tile
                    // unit and the vector units overlap).
                    if step + 1 < steps {
                        step_products(step + 1);
                    }
                    let buf = sums.add((step % 2) * CHUNK);
                    let first = c * CHUNK;
                    let end = (first + CHUNK).min(blocks);
                    // Each row's sums scaled and added block by block, eight rows at a time
                    // (eight independent sums in registers: one row alone would wait on each
                    // `fma`).
                    for half in (0..TILE_ROWS).step_by(HALF) {
                        let mut regs: [__m512; HALF] = std::array::from_fn(|j| acc[half + j]);
                        for b in first..end {
                            let dw = _mm512_loadu_ps(scales[b].as_ptr());
                            let block = &(*buf.add(b - first)).0;
                            for (j, reg) in regs.iter_mut().enumerate() {
                                let at = rows[half + j] + b;
                                let isum =
                                    _mm512_load_si512(block[half + j].as_ptr() as *const __m512i);
                                let d = _mm512_set1_ps(*x.d.get_unchecked(at));
                                let scale = _mm512_mul_ps(dw, d);
                                *reg = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), *reg);
                            }
                        }
                        acc[half..half + HALF].copy_from_slice(&regs);
                    }
                }
                for half in (0..TILE_ROWS).step_by(HALF) {
                    let mut mins = [_mm512_setzero_ps(); HALF];
                    if F == SEL_Q4_1 {
                        for b in 0..blocks {
                            let mw = _mm512_loadu_ps(minimums[b].as_ptr());
                            for (j, m) in mins.iter_mut().enumerate() {
                                let s = _mm512_set1_ps(*x.s.get_unchecked(rows[half + j] + b));
                                *m = _mm512_fmadd_ps(mw, s, *m);
                            }
                        }
                    }
                    for (j, m) in mins.iter().enumerate() {
                        // Padding rows have no output.
                        if let Some(row) = out.get_mut(t0 + half + j) {
                            let dst = &mut row[col..col + GROUP];
                            _mm512_storeu_ps(dst.as_mut_ptr(), _mm512_add_ps(acc[half + j], *m));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::f32_to_half;
    use crate::quant_packed::{group_dots, pack_in_place};

    /// The tile kernel against the plain `group_dots`, bit for bit: every format, 9 and 10
    /// blocks, 16 to 37 rows (whole tiles and padding), Q4_1 minimums of both signs.
    #[test]
    fn tile_kernel_equals_the_plain_group_dots() {
        if !available() {
            eprintln!("no AMX on this CPU (or KILN_AMX=0): nothing to compare");
            return;
        }
        let mut s = 0x9e37_79b9u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let formats = [QuantFormat::Q4_1, QuantFormat::Q5_0, QuantFormat::Q8_0];
        // An even and an odd block count: blocks go to the tile unit in pairs, the last of an
        // odd count alone.
        for (format, blocks) in formats.into_iter().flat_map(|f| [(f, 10), (f, 9)]) {
            let bb = format.block_bytes();
            let k = blocks * 32;
            let mut w: Vec<u8> = (0..GROUP * blocks * bb).map(|_| next() as u8).collect();
            let scales: &[usize] = if format == QuantFormat::Q4_1 {
                &[0, 2]
            } else {
                &[0]
            };
            for blk in w.chunks_exact_mut(bb) {
                for &at in scales {
                    let v = (next() % 2000) as f32 / 1e5 - 0.01;
                    blk[at..at + 2].copy_from_slice(&f32_to_half(v).to_le_bytes());
                }
            }
            pack_in_place(format, GROUP, k, &mut w);
            let x: Vec<f32> = (0..37 * k)
                .map(|_| (next() % 20_001) as f32 / 1000.0 - 10.0)
                .collect();
            let acts: Vec<_> = x
                .chunks_exact(k)
                .map(crate::quant::quantize_row_for_tests)
                .collect();
            let rows: Vec<PackedRow<'_>> = acts
                .iter()
                .map(|(d, s, sum, q)| PackedRow { d, s, sum, q })
                .collect();
            let mut scratch = TileScratch::default();
            for n in [16, 32, 37] {
                let mut want = vec![[0.0f32; GROUP]; n];
                group_dots(format, &w, &rows[..n], &mut want);
                let input = TileInput::gather(&rows[..n], blocks);
                let mut flat = vec![f32::NAN; n * (GROUP + 3)];
                let mut parts: Vec<&mut [f32]> = flat.chunks_mut(GROUP + 3).collect();
                groups_rows(format, &w, &input, &mut scratch, &mut parts, 2);
                let got: Vec<[f32; GROUP]> = flat
                    .chunks(GROUP + 3)
                    .map(|r| {
                        assert!(r[0].is_nan() && r[1].is_nan() && r[GROUP + 2].is_nan());
                        r[2..2 + GROUP].try_into().unwrap()
                    })
                    .collect();
                let bits = |v: &[[f32; GROUP]]| {
                    v.iter()
                        .flat_map(|r| r.iter().map(|x| x.to_bits()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(&got), bits(&want), "{format:?}, {n} rows");
                assert!(want.iter().flatten().any(|&v| v != 0.0));
            }
        }
    }
}
