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

/// Whether the packed kernels' one-row tiles (decoding one sequence, or a larger batch's
/// remainder) fetch weights ahead in software, as the larger tiles always do: on Intel CPUs,
/// unless `KILN_PREFETCH_ONE_ROW=0` (and `KILN_PREFETCH_ONE_ROW=1` turns it on elsewhere).
///
/// Measured with one-stream decoding on two virtual machines. On an Intel Xeon (480 MiB L3) it
/// raised SmolLM2-135M from a median of 277 to 371 tokens/s and Gemma 3 270M from 95 to 113
/// (2026-12-03, `bench/results/kernels-session13-2026-12-03.md`). On an AMD EPYC (Zen 4, 32 MiB
/// L3) the four products of a SmolLM2 step took 3.4-3.8 ms without it and 3.9-4.3 ms with it
/// (`bench/results/kernels-session8-2026-12-03.md`), and filling L2 instead ([`prefetch_target`])
/// left a whole model's one-row step unchanged (`bench/results/kernels-session18-2026-12-04.md`).
/// The vendor stands in for what differs between the two (how far the hardware prefetchers
/// run ahead of one stream of loads); the variable settles it where that guess is wrong.
pub fn prefetch_one_row() -> bool {
    static ONE_ROW: OnceLock<bool> = OnceLock::new();
    *ONE_ROW.get_or_init(|| match std::env::var("KILN_PREFETCH_ONE_ROW").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => is_intel(),
    })
}

/// The cache a software prefetch of weights fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchTarget {
    /// The first-level data cache (`prefetcht0`).
    L1,
    /// The second-level cache (`prefetcht1`).
    L2,
}

/// The cache the packed kernels' software prefetches fill: L1 on Intel CPUs, L2 elsewhere;
/// `KILN_PREFETCH=l1` or `=l2` overrides.
///
/// On an AMD EPYC (Zen 4, 1 MiB L2 per core) filling L2 made a whole model's products (the
/// `quant_stream` bench, weights streamed from memory, the two targets alternated step by step
/// in one process) 20-27% faster at 4 rows and 10-26% at 8, SmolLM2-135M and Gemma 3 270M
/// shapes alike (`bench/results/kernels-session18-2026-12-04.md`); likely (not measured with
/// counters) because the prefetched lines no longer push the input rows out of L1. The Intel Xeon where filling L1 was measured to pay
/// (`bench/results/kernels-session13-2026-12-03.md`) was not at hand to compare, so it keeps L1.
pub fn prefetch_target() -> PrefetchTarget {
    static TARGET: OnceLock<PrefetchTarget> = OnceLock::new();
    *TARGET.get_or_init(|| match std::env::var("KILN_PREFETCH").as_deref() {
        Ok("l1") => PrefetchTarget::L1,
        Ok("l2") => PrefetchTarget::L2,
        _ if is_intel() => PrefetchTarget::L1,
        _ => PrefetchTarget::L2,
    })
}

/// Whether the CPU's vendor string is Intel's.
#[cfg(target_arch = "x86_64")]
fn is_intel() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    // "GenuineIntel", in the order EBX, EDX, ECX.
    (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
}

/// No x86 vendor elsewhere.
#[cfg(not(target_arch = "x86_64"))]
fn is_intel() -> bool {
    false
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

#[cfg(test)]
mod tests {
    /// The vendor read from CPUID agrees with the kernel's (Linux's `/proc/cpuinfo`).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn vendor_agrees_with_proc_cpuinfo() {
        let info = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let vendor = info
            .lines()
            .find_map(|l| l.strip_prefix("vendor_id"))
            .and_then(|rest| rest.split(':').nth(1))
            .expect("a vendor_id line")
            .trim();
        assert_eq!(
            super::is_intel(),
            vendor == "GenuineIntel",
            "vendor {vendor}"
        );
    }
}
