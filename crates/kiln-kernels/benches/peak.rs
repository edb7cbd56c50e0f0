//! What this machine can do at most, the yardstick for every other figure: the AVX-512 VNNI
//! 8-bit multiply-add rate (`vpdpbusd`, the packed layers' instruction), the AVX-512 f32 FMA
//! rate (attention, transformers' float32 matrix products) and the memory read bandwidth, each
//! on one thread and on all of kiln's kernel threads at once.
//!
//! The arithmetic loops keep 12 independent accumulators, more than the instructions' latency
//! times their throughput on current x86 cores, so that they run at the issue rate; the read
//! loop sums a 1 GiB buffer (far past any cache) in eight independent lanes. Best of 5 runs.
//!
//! `cargo bench -p kiln-kernels --bench peak`; one JSON line follows the table.

use std::hint::black_box;
use std::time::Instant;

/// Accumulators per arithmetic loop.
const CHAINS: usize = 12;

/// Best (shortest) wall time of `runs` runs of `f` on `threads` threads at once, in seconds.
fn best_of(runs: usize, threads: usize, f: impl Fn() + Sync) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(&f);
                }
            });
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    /// `iters × CHAINS` `vpdpbusd` (64 byte products summed into 16 lanes each).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dpbusd(iters: usize) -> i32 {
        let (a, b) = (_mm512_set1_epi8(1), _mm512_set1_epi8(2));
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..iters {
            for acc in &mut acc {
                *acc = _mm512_dpbusd_epi32(*acc, a, b);
            }
        }
        acc.iter()
            .fold(0, |s, &v| s.wrapping_add(_mm512_reduce_add_epi32(v)))
    }

    /// `iters × CHAINS` 16-wide f32 FMAs.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma(iters: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for acc in &mut acc {
                *acc = _mm512_fmadd_ps(*acc, a, b);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }
}

/// The wrapping sum of `data` in eight independent lanes (memory-bound: the compiler
/// vectorizes it).
fn read_all(data: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    for c in data.chunks_exact(8) {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.wrapping_add(v);
        }
    }
    lanes.iter().fold(0, |s, &l| s.wrapping_add(l))
}

fn main() {
    let threads = kiln_kernels::parallel::threads();
    let counts: Vec<usize> = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    println!("kernel threads {threads}");
    println!("{:<34} {:>8} {:>12}", "measure", "threads", "rate");
    let mut json = serde_json::Map::new();
    json.insert("threads".into(), threads.into());

    #[cfg(target_arch = "x86_64")]
    {
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        let iters = 20_000_000;
        // Times `run` (`iters × CHAINS` instructions of `ops` operations each, per thread) on
        // `t` threads and reports the rate in tera-operations per second.
        let mut rate =
            |label: &str, unit: &str, key: &str, ops: f64, t: usize, run: &(dyn Fn() + Sync)| {
                let s = best_of(5, t, run);
                let rate = (iters * CHAINS * t) as f64 * ops / s / 1e12;
                println!("{label:<34} {t:>8} {rate:>8.3} {unit}");
                json.insert(format!("{key}_{t}"), rate.into());
            };
        for &t in &counts {
            if vnni {
                // 64 multiply-adds (two operations each) per instruction.
                rate(
                    "8-bit ops (vpdpbusd zmm)",
                    "TOPS",
                    "int8_tops",
                    128.0,
                    t,
                    &|| {
                        // SAFETY: the features `dpbusd` enables were detected above.
                        black_box(unsafe { x86::dpbusd(black_box(iters)) });
                    },
                );
            }
            if is_x86_feature_detected!("avx512f") {
                // 16 multiply-adds (two operations each) per instruction.
                rate(
                    "f32 flops (vfmadd zmm)",
                    "TFLOPS",
                    "f32_tflops",
                    32.0,
                    t,
                    &|| {
                        // SAFETY: AVX-512F was detected.
                        black_box(unsafe { x86::fma(black_box(iters)) });
                    },
                );
            }
        }
        if !vnni {
            println!("(no AVX-512 VNNI on this CPU: the 8-bit rate is not measured)");
        }
    }

    let words = (1usize << 30) / 8;
    let data: Vec<u64> = (0..words as u64).collect();
    for &t in &counts {
        let part = words / t;
        let s = best_of(5, 1, || {
            std::thread::scope(|sc| {
                for c in data.chunks(part).take(t) {
                    sc.spawn(move || black_box(read_all(black_box(c))));
                }
            });
        });
        let gbs = (part * t * 8) as f64 / s / 1e9;
        println!("{:<34} {:>8} {:>8.1} GB/s", "memory read (1 GiB)", t, gbs);
        json.insert(format!("read_gbs_{t}"), gbs.into());
    }
    println!("{}", serde_json::Value::Object(json));
}
