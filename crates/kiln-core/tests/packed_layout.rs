//! The packed layout of kiln-kernels (`quant_packed`) on the real models' weights: every
//! matrix that loading packs gives the same layer outputs as its ggml rows (within float
//! rounding: the block sums are exact in both, only the order of the `f32` additions differs;
//! a wrong column, lane or nibble would be off by orders of magnitude more)
//! and the same embedding rows, and unpacking gives back the file's bytes. Runs the packed
//! layout's kernel where this CPU has it (AVX-512 VNNI), its plain code elsewhere.

// The parity tests' helpers; only `model_path` is used here.
#[allow(dead_code)]
mod common;

use kiln_core::weights::ggml::GgmlType;
use kiln_core::weights::gguf::GgufFile;
use kiln_kernels::quant::{QuantFormat, QuantLinear};
use kiln_kernels::quant_packed;

fn file(env_var: &str, default: &str) -> GgufFile {
    let path = common::model_path(env_var, default);
    assert!(
        path.is_file(),
        "the real model is missing at {}",
        path.display()
    );
    GgufFile::read(&path).unwrap()
}

/// Packs every packable matrix of the file (whatever this CPU prefers) and compares.
fn check(env_var: &str, default: &str) -> usize {
    let stored = file(env_var, default);
    let mut packed = file(env_var, default);
    let count = packed.pack_matrices(quant_packed::packable);
    for (a, b) in stored.tensors.iter().zip(&packed.tensors) {
        if !b.packed {
            continue;
        }
        let format = match a.ggml_type {
            GgmlType::Q4_1 => QuantFormat::Q4_1,
            GgmlType::Q5_0 => QuantFormat::Q5_0,
            GgmlType::Q8_0 => QuantFormat::Q8_0,
            GgmlType::Q4K => QuantFormat::Q4K,
            GgmlType::Q6K => QuantFormat::Q6K,
            other => panic!("{other:?} has no packed layout"),
        };
        let (n, k) = (a.shape[0], a.shape[1]);
        let rows = QuantLinear::from_shared(format, stored.shared_bytes(), a.offset, n, k);
        let fast = QuantLinear::from_shared_packed(format, packed.shared_bytes(), b.offset, n, k);
        for m in [1usize, 3, 11] {
            // Mostly small inputs with a few large ones, as hidden states are.
            let x: Vec<f32> = (0..m * k)
                .map(|i| {
                    let v = ((i * 7919) % 1009) as f32 / 504.5 - 1.0;
                    if i % 97 == 0 {
                        30.0 * v
                    } else {
                        v
                    }
                })
                .collect();
            let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
            rows.forward(&x, m, &mut want);
            fast.forward(&x, m, &mut got);
            // Rounding is relative to the sums' terms, which the row's largest output stands
            // for (outputs near zero are differences of much larger terms).
            for (r, (g, w)) in got.chunks_exact(n).zip(want.chunks_exact(n)).enumerate() {
                let scale = 1.0 + w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (i, (g, w)) in g.iter().zip(w).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "{} ({m} rows) row {r} output {i}: packed {g}, rows {w}",
                        a.name
                    );
                }
            }
        }
        let (mut want, mut got) = (vec![0.0; k], vec![0.0; k]);
        for r in [0, 17, n / 2 + 5, n - 1] {
            rows.dequantize_row(r, &mut want);
            fast.dequantize_row(r, &mut got);
            assert_eq!(got, want, "{} row {r}", a.name);
        }
        let mut back = packed.tensor_bytes(b).to_vec();
        quant_packed::unpack_in_place(format, n, k, &mut back);
        assert!(
            back == stored.tensor_bytes(a),
            "{}: unpacking restores the file's bytes",
            a.name
        );
        if n * k <= 1 << 22 {
            assert_eq!(
                packed.f32(&b.name, &b.shape).unwrap(),
                stored.f32(&a.name, &a.shape).unwrap(),
                "{}: dequantized through the packed bytes",
                a.name
            );
        }
    }
    count
}

#[test]
fn smollm2_packed_matrices_compute_as_the_file_rows() {
    let n = check(
        "KILN_SMOLLM2_GGUF",
        "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    );
    // 30 layers × 7 matrices (Q4_1) and the tied embedding (Q8_0).
    assert_eq!(n, 30 * 7 + 1);
}

#[test]
fn gemma3_packed_matrices_compute_as_the_file_rows() {
    let n = check(
        "KILN_GEMMA3_GGUF",
        "models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
    );
    // Every layer's seven matrices (Q5_0, Q8_0, and Q4_K/Q6_K for the output and down
    // projections, whose input widths are whole 256-value super-blocks) and the tied embedding.
    assert_eq!(n, 18 * 7 + 1);
}

#[test]
fn qwen2_packed_matrices_compute_as_the_file_rows() {
    let n = check(
        "KILN_QWEN2_GGUF",
        "models/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf",
    );
    // 24 layers × 7 matrices (Q5_0, Q8_0, and Q4_K/Q6_K down projections), the embedding and
    // the output matrix.
    assert_eq!(n, 24 * 7 + 2);
}
