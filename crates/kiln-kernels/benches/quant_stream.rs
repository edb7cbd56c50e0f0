//! A decode step's matrix products over a whole model's layers, as a server runs them: every
//! layer its own weights, 96 MB and 249 MB in all (more than most CPUs' last-level cache), so
//! that they stream in from memory or a large L3 at every step (the `quant` bench times one
//! layer again and again, from the CPU caches).
//! Shapes of SmolLM2-135M (30 layers, Q4_1, a Q8_0 output layer) and of Gemma 3 270M
//! (18 layers; its Q5_0/Q6_K mix, a 262,144-row Q8_0 output layer), for 1, 4 and 8 rows.
//!
//! `cargo bench -p kiln-kernels --bench quant_stream`: the median step (ms) and the weight
//! bytes it read per second. `KILN_PREFETCH_ONE_ROW=0` or `=1` compares the one-row tiles
//! without and with software prefetching, `KILN_PREFETCH=l1` or `=l2` the cache the prefetches
//! fill.

use kiln_kernels::quant::{QuantFormat, QuantLinear};
use kiln_kernels::quant_packed;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// Random-looking blocks with small f16 scales (0x2000 is about 0.0078).
fn weights(format: QuantFormat, n: usize, k: usize, seed: u32) -> Vec<u8> {
    let bytes = n * k / format.block_len() * format.block_bytes();
    let mut s = 0x1234_5678u32 ^ seed.wrapping_mul(0x9e37_79b9);
    let mut data: Vec<u8> = (0..bytes)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        })
        .collect();
    let (bb, scales) = match format {
        QuantFormat::Q4_1 => (20, &[0usize, 2][..]),
        QuantFormat::Q6K => (210, &[208][..]),
        QuantFormat::Q4K => (144, &[0, 2][..]),
        QuantFormat::Q5_0 => (22, &[0][..]),
        QuantFormat::Q8_0 => (34, &[0][..]),
        other => unreachable!("{other:?} is not used here"),
    };
    for blk in data.chunks_exact_mut(bb) {
        for &o in scales {
            blk[o..o + 2].copy_from_slice(&0x2000u16.to_le_bytes());
        }
    }
    data
}

/// A layer as the model loader makes it: packed where this CPU packs.
fn layer(format: QuantFormat, k: usize, n: usize, seed: u32) -> (QuantLinear, usize) {
    let mut data = weights(format, n, k, seed);
    let bytes = data.len();
    let lin = if quant_packed::packs(format, n, k) {
        quant_packed::pack_in_place(format, n, k, &mut data);
        QuantLinear::from_shared_packed(format, Arc::new(data), 0, n, k)
    } else {
        QuantLinear::new(format, data, n, k)
    };
    (lin, bytes)
}

/// One model: its per-layer products (format, in, out) and output layer.
struct Model {
    name: &'static str,
    layers: usize,
    per_layer: Vec<(QuantFormat, usize, usize)>,
    output: (QuantFormat, usize, usize),
}

fn main() {
    println!(
        "SIMD level {:?}, AVX-512 VNNI kernels: {}, threads {}",
        kiln_kernels::cpu::simd_level(),
        kiln_kernels::cpu::has_avx512_vnni(),
        kiln_kernels::parallel::threads()
    );
    let models = [
        Model {
            name: "SmolLM2-135M",
            layers: 30,
            per_layer: vec![
                (QuantFormat::Q4_1, 576, 960),
                (QuantFormat::Q4_1, 576, 576),
                (QuantFormat::Q4_1, 576, 3072),
                (QuantFormat::Q4_1, 1536, 576),
            ],
            output: (QuantFormat::Q8_0, 576, 49152),
        },
        Model {
            name: "Gemma 3 270M",
            layers: 18,
            per_layer: vec![
                (QuantFormat::Q5_0, 640, 1536),
                (QuantFormat::Q4K, 1024, 640),
                (QuantFormat::Q5_0, 640, 4096),
                (QuantFormat::Q6K, 2048, 640),
            ],
            output: (QuantFormat::Q8_0, 640, 262_144),
        },
    ];
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>8}",
        "model", "rows", "MB", "median ms", "GB/s"
    );
    for m in &models {
        let mut seed = 0;
        let mut layers = Vec::new();
        let mut bytes = 0;
        for _ in 0..m.layers {
            for &(f, k, n) in &m.per_layer {
                seed += 1;
                let (l, b) = layer(f, k, n, seed);
                layers.push((l, k, n));
                bytes += b;
            }
        }
        let (f, k, n) = m.output;
        let (l, b) = layer(f, k, n, 0);
        layers.push((l, k, n));
        bytes += b;
        let widest = layers.iter().map(|&(_, k, n)| k.max(n)).max().unwrap_or(0);
        for rows in [1usize, 4, 8] {
            let x: Vec<f32> = (0..rows * widest)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let mut out = vec![0.0f32; rows * widest];
            let mut step = || {
                for (l, k, n) in &layers {
                    l.forward(black_box(&x[..rows * k]), rows, &mut out[..rows * n]);
                }
            };
            step();
            let mut t: Vec<f64> = (0..25)
                .map(|_| {
                    let s = Instant::now();
                    step();
                    s.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            let ms = t[t.len() / 2];
            println!(
                "{:<16} {:>5} {:>10.1} {:>10.2} {:>8.1}",
                m.name,
                rows,
                bytes as f64 / 1e6,
                ms,
                bytes as f64 / ms / 1e6
            );
        }
    }
}
