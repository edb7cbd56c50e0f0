//! Kernel timings for the shapes of all-MiniLM-L6-v2 (hidden 384, 12 heads, FFN 1536).
//!
//! `cargo bench -p kiln-kernels` prints the median of many runs for each kernel and shape.

use kiln_kernels::activation::gelu_erf;
use kiln_kernels::attention::{packed_bidirectional, AttentionShape};
use kiln_kernels::causal_attention::{causal_cached, CacheView, CausalShape};
use kiln_kernels::linear::Linear;
use kiln_kernels::norm::add_layer_norm;
use kiln_kernels::swiglu::{silu_libm, swiglu};
use std::hint::black_box;
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

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
        .collect()
}

fn main() {
    println!("{:<40} {:>12} {:>10}", "kernel", "median us", "GFLOP/s");
    // SmolLM2-135M's gated activation for 8 decoding sequences, one layer (FFN 1536; 30 layers
    // in all), on one thread: libm's `expf` value by value against the vector kernel.
    {
        let gate: Vec<f32> = data(8 * 1536).iter().map(|v| v * 10.0).collect();
        let up = data(8 * 1536);
        let mut out = vec![0.0; 8 * 1536];
        let us = median_us(
            || {
                for ((o, &g), &u) in out.iter_mut().zip(black_box(&gate)).zip(&up) {
                    *o = silu_libm(g) * u;
                }
                black_box(&mut out);
            },
            500,
        );
        println!("{:<40} {:>12.1}", "swiglu 8x1536, libm expf", us);
        let us = median_us(|| swiglu(black_box(&gate), &up, &mut out), 500);
        println!(
            "{:<40} {:>12.1}",
            format!("swiglu 8x1536, {:?}", kiln_kernels::swiglu::variant()),
            us
        );
    }
    // The input of SmolLM2-135M's down projection for 8 decoding sequences (8 rows of 1536),
    // quantized to 8-bit blocks of 32 as every quantized layer's input is, on one thread.
    {
        let x: Vec<f32> = data(8 * 1536).iter().map(|v| v * 3.0).collect();
        let (mut q, mut d, mut s, mut sum) = (
            vec![0i8; x.len()],
            vec![0.0; x.len() / 32],
            vec![0.0; x.len() / 32],
            vec![0; x.len() / 32],
        );
        let us = median_us(
            || {
                kiln_kernels::quant::quantize_blocks(
                    black_box(&x),
                    &mut q,
                    &mut d,
                    &mut s,
                    &mut sum,
                )
            },
            2000,
        );
        println!("{:<40} {:>12.2}", "quantize 8x1536 to Q8_1 blocks", us);
        // Gemma 3 270M's down projection input at 8 sequences (8 rows of 2048), to Q8_K.
        let x: Vec<f32> = data(8 * 2048).iter().map(|v| v * 3.0).collect();
        let us = median_us(
            || {
                for row in black_box(&x).chunks_exact(2048) {
                    black_box(kiln_kernels::quant_blocks::quantize_row_q8_k(row));
                }
            },
            2000,
        );
        println!("{:<40} {:>12.2}", "quantize 8x2048 to Q8_K blocks", us);
    }
    // One decode row of SmolLM2-135M's attention (9 query heads, 3 key/value heads of 64) over
    // an f16 cache of `n` positions: the step of a batched decode, per sequence and layer.
    for n in [40usize, 160, 640] {
        let shape = CausalShape {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            window: None,
            scale: 0.125,
            f16_probs: true,
        };
        let half = |v: Vec<f32>| -> Vec<u16> {
            v.iter()
                .map(|&x| kiln_kernels::quant::f32_to_half(x))
                .collect()
        };
        let (keys, values) = (half(data(n * 192)), half(data(n * 192 + 7)[7..].to_vec()));
        let q = data(576);
        let mut out = vec![0.0; 576];
        let cache = CacheView::F16 {
            keys: &keys,
            values: &values,
        };
        let us = median_us(
            || causal_cached(&shape, black_box(&q), 576, cache, n - 1, &mut out),
            2000,
        );
        let gflops = 4.0 * (9 * 64 * n) as f64 / us / 1e3;
        println!(
            "{:<40} {:>12.2} {:>10.1}",
            format!("decode attention 9/3x64 over {n}"),
            us,
            gflops
        );
    }
    // A prompt chunk's attention (256 new rows after `start` cached positions, the engine's
    // chunk) over an f16 cache: SmolLM2-135M's heads (9 of 64 over 3) and Gemma 3 270M's (4 of
    // 256 over 1), the chunk in one call (its keys transposed once, on AVX-512) beside the same
    // rows one call each (the decode-row kernel, on this thread); the results are the same bits.
    for (name, heads, kv_heads, d) in [("9/3x64", 9usize, 3usize, 64usize), ("4/1x256", 4, 1, 256)]
    {
        for start in [0usize, 256] {
            let rows = 256;
            let shape = CausalShape {
                heads,
                kv_heads,
                head_dim: d,
                window: None,
                scale: 0.125,
                f16_probs: true,
            };
            let (q_w, kv_w) = (heads * d, kv_heads * d);
            let half = |v: Vec<f32>| -> Vec<u16> {
                v.iter()
                    .map(|&x| kiln_kernels::quant::f32_to_half(x))
                    .collect()
            };
            let n = start + rows;
            let (keys, values) = (half(data(n * kv_w)), half(data(n * kv_w + 7)[7..].to_vec()));
            let q = data(rows * q_w);
            let mut out = vec![0.0; rows * q_w];
            let cache = CacheView::F16 {
                keys: &keys,
                values: &values,
            };
            let chunk = median_us(
                || {
                    causal_cached(
                        &shape,
                        black_box(&q),
                        q_w,
                        cache,
                        start,
                        black_box(&mut out),
                    )
                },
                20,
            );
            let chunk_out = out.clone();
            let by_row = median_us(
                || {
                    for (r, o) in out.chunks_mut(q_w).enumerate() {
                        causal_cached(&shape, black_box(&q[r * q_w..]), q_w, cache, start + r, o);
                    }
                },
                20,
            );
            assert!(
                chunk_out
                    .iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "the chunk and its rows one by one differ"
            );
            // Single rows never split over threads: the ratio compares like with like only on
            // one thread.
            let ratio = if kiln_kernels::parallel::threads() == 1 {
                format!("{:.2}x", by_row / chunk)
            } else {
                "RAYON_NUM_THREADS=1 to compare".to_string()
            };
            println!(
                "{:<40} {:>12.1} {:>10.1}   row by row {:.1} us ({ratio})",
                format!("prompt attention {name} 256 after {start}"),
                chunk,
                4.0 * (heads * d * rows * (start + rows / 2)) as f64 / chunk / 1e3,
                by_row,
            );
        }
    }
    for rows in [12usize, 128, 384] {
        for (k, n) in [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)] {
            let lin = Linear::from_torch(&data(n * k), Some(data(n)), n, k);
            let x = data(rows * k);
            let mut out = vec![0.0; rows * n];
            let us = median_us(|| lin.forward(black_box(&x), rows, &mut out), 200);
            let gflops = 2.0 * (rows * k * n) as f64 / us / 1e3;
            println!(
                "{:<40} {:>12.1} {:>10.1}",
                format!("linear {rows}x{k} -> {n}"),
                us,
                gflops
            );
        }
        let shape = AttentionShape {
            heads: 12,
            head_dim: 32,
        };
        let qkv = data(rows * 1152);
        let mut out = vec![0.0; rows * 384];
        let us = median_us(
            || packed_bidirectional(black_box(&qkv), &[rows], shape, &mut out),
            200,
        );
        println!("{:<40} {:>12.1}", format!("attention 1 seq of {rows}"), us);
        let mut x = data(rows * 1536);
        let us = median_us(|| gelu_erf(black_box(&mut x)), 200);
        println!("{:<40} {:>12.1}", format!("gelu {rows}x1536"), us);
        let mut x = data(rows * 384);
        let r = data(rows * 384);
        let g = vec![1.0; 384];
        let us = median_us(|| add_layer_norm(black_box(&mut x), &r, &g, &g, 1e-12), 200);
        println!("{:<40} {:>12.1}", format!("add+layernorm {rows}x384"), us);
    }
}
