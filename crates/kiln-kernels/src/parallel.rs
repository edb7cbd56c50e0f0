//! When work is worth splitting across threads.

/// Floating-point operations below which a kernel stays on the calling thread.
///
/// A rayon fork/join costs a few microseconds; below this much work it does not pay.
pub const PARALLEL_FLOP_THRESHOLD: usize = 1 << 20;

/// Number of threads rayon will use.
pub fn threads() -> usize {
    rayon::current_num_threads()
}
