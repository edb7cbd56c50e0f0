//! When work is worth splitting across threads, and the threads themselves.
//!
//! On native targets the kernels use rayon. wasm32 has no threads here, so there the
//! crate-private `prelude` offers the same method names on plain sequential iterators and
//! [`threads`] is 1: the call sites stay the same and simply run on the calling thread.

/// Floating-point operations below which a kernel stays on the calling thread.
///
/// A rayon fork/join costs a few microseconds; below this much work it does not pay.
pub const PARALLEL_FLOP_THRESHOLD: usize = 1 << 20;

/// Number of threads rayon will use.
#[cfg(not(target_arch = "wasm32"))]
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Number of threads the kernels may use: one on wasm.
#[cfg(target_arch = "wasm32")]
pub fn threads() -> usize {
    1
}

/// Runs `f` on one of the kernel threads and waits for it (native), so that the parallel
/// kernels `f` calls share their work with the thread running `f`: called from an outside
/// thread, each kernel would hand its work to the pool and leave that thread idle, and the
/// sequential parts between kernels would leave the pool idle. One hand-over per call costs
/// microseconds, so give it a whole step of work (a batched decode step), not one kernel.
#[cfg(not(target_arch = "wasm32"))]
pub fn on_kernel_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Runs `f` here: wasm has no kernel threads.
#[cfg(target_arch = "wasm32")]
pub fn on_kernel_threads<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// rayon's parallel iterators (native).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod prelude {
    pub(crate) use rayon::prelude::*;
}

/// Sequential stand-ins for the rayon methods the kernels call (wasm).
#[cfg(target_arch = "wasm32")]
pub(crate) mod prelude {
    /// `par_chunks_mut` as plain `chunks_mut`.
    pub(crate) trait ParChunksMut<T> {
        /// The sequential `chunks_mut`.
        fn par_chunks_mut(&mut self, size: usize) -> std::slice::ChunksMut<'_, T>;
    }

    impl<T> ParChunksMut<T> for [T] {
        fn par_chunks_mut(&mut self, size: usize) -> std::slice::ChunksMut<'_, T> {
            self.chunks_mut(size)
        }
    }

    /// `into_par_iter` as plain `into_iter`.
    pub(crate) trait IntoParIter: IntoIterator + Sized {
        /// The sequential `into_iter`.
        fn into_par_iter(self) -> Self::IntoIter {
            self.into_iter()
        }
    }

    impl<I: IntoIterator> IntoParIter for I {}
}
