//! When work is worth splitting across threads, and the threads themselves.
//!
//! On native targets the kernels split their work over a team of kernel threads (the private
//! `team` module) whose helpers spin between jobs; rayon remains for the `gemm` crate.
//! wasm32 has no threads here, so there [`threads`] is 1 and the same functions run their
//! tasks in order on the calling thread.

/// Floating-point operations below which a kernel stays on the calling thread.
///
/// A fork-join costs a few microseconds; below this much work it does not pay.
pub const PARALLEL_FLOP_THRESHOLD: usize = 1 << 20;

/// Number of kernel threads (rayon's count, so `RAYON_NUM_THREADS` sets both).
#[cfg(not(target_arch = "wasm32"))]
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Number of threads the kernels may use: one on wasm.
#[cfg(target_arch = "wasm32")]
pub fn threads() -> usize {
    1
}

/// Runs `f` on one of rayon's threads and waits for it (native), so that the `gemm` crate's
/// rayon-parallel products (the `f32` layers on CPUs without AVX-512) share their work with the
/// thread running `f`: called from an outside thread, each would hand its work to the pool and
/// leave that thread idle. The kernels' own team of threads works with any caller. One
/// hand-over per call costs microseconds, so give it a whole step of work (a batched decode
/// step), not one kernel.
#[cfg(not(target_arch = "wasm32"))]
pub fn on_kernel_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Runs `f` here: wasm has no kernel threads.
#[cfg(target_arch = "wasm32")]
pub fn on_kernel_threads<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Values (all rows) below which a row-by-row pass ([`map_rows`], a layer's input
/// quantization) stays on the calling thread.
///
/// Such a pass costs about a nanosecond per value, and a batched decode step runs ten of them
/// per layer: at 4096 values each of 8 rows' passes (5-12 K values) was a fork-join of its own,
/// whose hand-over and tail cost about what the split saved. 32768 keeps decoding steps of up
/// to about 16 sequences on the step's thread and still splits prompt chunks (256 rows):
/// SmolLM2-135M at 8 streams 1060-1146 → 1081-1188 tokens/s (medians 1087 → 1140),
/// 20-token first token 9.8-11.2 → 9.2-10.5 ms, each round's first request left out (medians
/// 10.5 → 9.5), 500-token unchanged (three and two alternating rounds, 2026-12-03,
/// `bench/results/kernels-session13-2026-12-03.md`).
pub(crate) const PARALLEL_VALUE_THRESHOLD: usize = 32768;

/// Calls `f(out_row, in_row)` for every row: `out` is rows of `out_width` values and `input` as
/// many rows of `in_width`. The rows are spread over the kernel threads when there are several
/// and enough values (an element-wise activation of a batched step); the results do not
/// depend on that.
///
/// # Panics
/// If a width is zero, or `out` and `input` do not hold the same number of whole rows.
pub fn map_rows(
    out: &mut [f32],
    out_width: usize,
    input: &[f32],
    in_width: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) {
    assert!(out_width > 0 && in_width > 0, "row widths");
    let rows = out.len() / out_width;
    assert!(
        out.len() == rows * out_width && input.len() == rows * in_width,
        "whole rows"
    );
    if rows > 1 && out.len() >= PARALLEL_VALUE_THRESHOLD && threads() > 1 {
        for_each_chunk_mut(out, out_width, |r, o| {
            f(o, &input[r * in_width..(r + 1) * in_width])
        });
    } else {
        for (o, i) in out
            .chunks_exact_mut(out_width)
            .zip(input.chunks_exact(in_width))
        {
            f(o, i);
        }
    }
}

/// Calls `f(r, row)` for every row `r` of `data` (rows of `width` values), in place: spread
/// over the kernel threads when there are several rows and enough values, as [`map_rows`].
///
/// # Panics
/// If `width` is zero or `data` does not hold whole rows.
pub fn for_each_row_mut(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    assert!(width > 0 && data.len().is_multiple_of(width), "whole rows");
    let rows = data.len() / width;
    if rows > 1 && data.len() >= PARALLEL_VALUE_THRESHOLD && threads() > 1 {
        for_each_chunk_mut(data, width, f);
    } else {
        data.chunks_exact_mut(width)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
}

/// Calls `f(i, chunk)` for every `size`-long chunk `i` of `data` (the last may be shorter):
/// spread over the kernel threads on native targets, in order on wasm.
pub(crate) fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let chunks: Vec<std::sync::Mutex<&mut [T]>> =
            data.chunks_mut(size).map(std::sync::Mutex::new).collect();
        // Each task locks only its own chunk: the locks are never contended.
        crate::team::run(chunks.len(), &|i| {
            let mut chunk = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
            f(i, &mut chunk)
        });
    }
    #[cfg(target_arch = "wasm32")]
    data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
}

/// Calls `f` on every item: spread over the kernel threads on native targets, in order on wasm.
/// Each item is one task: give it work of tens of microseconds or more.
pub fn for_each_mut<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let items: Vec<std::sync::Mutex<&mut T>> =
            items.iter_mut().map(std::sync::Mutex::new).collect();
        crate::team::run(items.len(), &|i| {
            f(&mut items[i].lock().unwrap_or_else(|e| e.into_inner()))
        });
    }
    #[cfg(target_arch = "wasm32")]
    items.iter_mut().for_each(f);
}

/// Calls `f(i)` for every `i < n`: spread over the kernel threads on native targets, in order
/// on wasm. Only the x86-64 AVX-512 dense kernel calls it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn for_each_index(n: usize, f: impl Fn(usize) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    crate::team::run(n, &f);
    #[cfg(target_arch = "wasm32")]
    (0..n).for_each(f);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row counts and widths on both sides of [`PARALLEL_VALUE_THRESHOLD`].
    const SHAPES: [(usize, usize); 6] =
        [(1, 8), (3, 5), (16, 1024), (9, 700), (48, 1024), (37, 1000)];

    #[test]
    fn the_shapes_straddle_the_threshold() {
        assert!(SHAPES
            .iter()
            .any(|&(r, w)| r * w < PARALLEL_VALUE_THRESHOLD));
        assert!(SHAPES
            .iter()
            .any(|&(r, w)| r > 1 && r * w >= PARALLEL_VALUE_THRESHOLD));
    }

    #[test]
    fn map_rows_gives_every_row_its_input_threaded_or_not() {
        for (rows, width) in SHAPES {
            let input: Vec<f32> = (0..rows * 2 * width).map(|i| i as f32).collect();
            let mut out = vec![f32::NAN; rows * width];
            map_rows(&mut out, width, &input, 2 * width, |o, i| {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = i[j] * 2.0 + i[width + j];
                }
            });
            for r in 0..rows {
                for j in 0..width {
                    let want = input[r * 2 * width + j] * 2.0 + input[r * 2 * width + width + j];
                    assert_eq!(
                        out[r * width + j],
                        want,
                        "{rows}x{width}: row {r}, value {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn for_each_row_mut_visits_every_row_once_with_its_index() {
        for (rows, width) in SHAPES {
            let mut data = vec![1.0f32; rows * width];
            for_each_row_mut(&mut data, width, |r, row| {
                for v in row.iter_mut() {
                    *v += r as f32;
                }
            });
            for (r, row) in data.chunks_exact(width).enumerate() {
                assert!(
                    row.iter().all(|&v| v == 1.0 + r as f32),
                    "{rows}x{width} row {r}"
                );
            }
        }
    }

    #[test]
    fn chunks_and_items_are_each_visited_once_with_their_index() {
        let mut data: Vec<usize> = vec![0; 1001];
        for_each_chunk_mut(&mut data, 64, |c, chunk| {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v += c * 64 + j + 1;
            }
        });
        assert!(data.iter().enumerate().all(|(i, &v)| v == i + 1));
        let mut items: Vec<(usize, usize)> = (0..37).map(|i| (i, 0)).collect();
        for_each_mut(&mut items, |(i, v)| *v += *i * 3);
        assert!(items.iter().all(|&(i, v)| v == i * 3));
        let sum = std::sync::atomic::AtomicUsize::new(0);
        for_each_index(100, |i| {
            sum.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 4950);
    }
}
