//! Run-time CPU feature detection: which instruction set the kernels may use on this machine.

use std::sync::OnceLock;

/// The instruction-set levels kiln has kernels for, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Whatever the compilation target guarantees (SSE2 on x86-64, SIMD128 on wasm if enabled).
    Baseline,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 Foundation and Byte/Word (with AVX2 and FMA).
    Avx512,
}

/// The best level this CPU supports, detected once; `KILN_SIMD=baseline|avx2|avx512` caps it.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = detect();
        let cap = match std::env::var("KILN_SIMD").as_deref() {
            Ok("baseline") => SimdLevel::Baseline,
            Ok("avx2") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        detected.min(cap)
    })
}

/// Whether the AVX-512 VNNI integer dot-product kernels may run: the CPU has AVX-512 VNNI, VL
/// and F16C, [`simd_level`] is AVX-512, and `KILN_VNNI=0` does not turn them off.
pub fn has_avx512_vnni() -> bool {
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            simd_level() == SimdLevel::Avx512
                && std::env::var("KILN_VNNI").as_deref() != Ok("0")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        SimdLevel::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        SimdLevel::Avx2
    } else {
        SimdLevel::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Baseline
}

/// Defines `pub fn $name` that runs `$body` compiled for the best available instruction set.
///
/// The body is an ordinary safe function; the macro instantiates it three times with
/// different `target_feature`s and dispatches on [`simd_level`] at run time.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::cpu::simd_level() {
                    // SAFETY: simd_level() reports AVX-512F, AVX2 and FMA only when the CPU has them.
                    $crate::cpu::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: simd_level() reports AVX2 and FMA only when the CPU has them.
                    $crate::cpu::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::cpu::SimdLevel::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
