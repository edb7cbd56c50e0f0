//! Quantized dense layers at SmolLM2-135M's shapes (hidden 576, FFN 1536, vocabulary 49152)
//! for 1, 4, 8 and 16 rows (decoding as many sequences at once), 64 rows and 256 rows (a prompt
//! chunk; the engine prefills 256 positions at a time).
//! Where this CPU packs a matrix (`kiln_kernels::quant_packed`), the packed layer is timed
//! beside the ggml-row layer.
//!
//! `cargo bench -p kiln-kernels --bench quant` uses the best kernels of this CPU; run it again
//! with `KILN_VNNI=0` (AVX2 kernels) or `KILN_SIMD=baseline` (plain code) to compare.

use kiln_kernels::quant::{QuantFormat, QuantLinear};
use kiln_kernels::quant_packed;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn median_us(mut f: impl FnMut(), runs: usize) -> f64 {
    for _ in 0..runs / 10 + 1 {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// Random-looking blocks with small f16 scales (0x2000 is about 0.0078).
fn weights(format: QuantFormat, n: usize, k: usize) -> Vec<u8> {
    let bytes = n * k / format.block_len() * format.block_bytes();
    let mut s = 0x1234_5678u32;
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
        QuantFormat::Q4_0 => (18, &[0][..]),
        QuantFormat::Q8_0 => (34, &[0][..]),
    };
    for blk in data.chunks_exact_mut(bb) {
        for &o in scales {
            blk[o..o + 2].copy_from_slice(&0x2000u16.to_le_bytes());
        }
    }
    data
}

fn main() {
    println!(
        "SIMD level {:?}, AVX-512 VNNI kernels: {}",
        kiln_kernels::cpu::simd_level(),
        kiln_kernels::cpu::has_avx512_vnni()
    );
    println!("{:<44} {:>12} {:>12}", "layer", "median us", "GB/s weights");
    let shapes = [
        (QuantFormat::Q4_1, 576, 3 * 576, "qkv"),
        (QuantFormat::Q4_1, 576, 2 * 1536, "gate+up"),
        (QuantFormat::Q4_1, 1536, 576, "down"),
        (QuantFormat::Q8_0, 576, 49152, "output"),
        (QuantFormat::Q5_0, 640, 4096, "gemma gate+up"),
        (QuantFormat::Q6K, 2048, 640, "gemma down"),
        (QuantFormat::Q4K, 1024, 640, "gemma attn output"),
    ];
    for rows in [1usize, 4, 8, 16, 64, 256] {
        for &(format, k, n, name) in &shapes {
            let data = weights(format, n, k);
            let bytes = data.len();
            let mut packed = quant_packed::packs(format, n, k).then(|| data.clone());
            let lin = QuantLinear::new(format, data, n, k);
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let mut out = vec![0.0; rows * n];
            let runs = if n > 10_000 { 50 } else { 300 };
            let us = median_us(|| lin.forward(black_box(&x), rows, &mut out), runs);
            println!(
                "{:<44} {:>12.1} {:>12.1}",
                format!("{format:?} {name} {rows}x{k} -> {n}"),
                us,
                bytes as f64 / us / 1e3
            );
            if let Some(p) = packed.as_mut() {
                quant_packed::pack_in_place(format, n, k, p);
                let fast =
                    QuantLinear::from_shared_packed(format, Arc::new(std::mem::take(p)), 0, n, k);
                let us = median_us(|| fast.forward(black_box(&x), rows, &mut out), runs);
                println!(
                    "{:<44} {:>12.1} {:>12.1}",
                    format!("  packed"),
                    us,
                    bytes as f64 / us / 1e3
                );
            }
        }
    }
}
