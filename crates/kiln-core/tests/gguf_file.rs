//! GGUF parsing and dequantization against files and values written by llama.cpp's gguf-py
//! (fixtures from scripts/reference/make_gguf_fixtures.py).

use kiln_core::weights::ggml::GgmlType;
use kiln_core::weights::gguf::{GgufFile, MetaValue};
use kiln_core::Error;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf/quants.gguf")
}

#[test]
fn metadata_of_every_value_type() {
    let f = GgufFile::read(&fixture()).unwrap();
    assert_eq!(f.version, 3);
    let m = |k: &str| f.meta(k).unwrap_or_else(|| panic!("missing {k}")).clone();
    assert_eq!(m("general.architecture").as_str(), Some("llama"));
    assert_eq!(m("test.u8"), MetaValue::UInt(200));
    assert_eq!(m("test.i8"), MetaValue::Int(-100));
    assert_eq!(m("test.u16"), MetaValue::UInt(60000));
    assert_eq!(m("test.i16"), MetaValue::Int(-30000));
    assert_eq!(m("test.u32"), MetaValue::UInt(4_000_000_000));
    assert_eq!(m("test.i32"), MetaValue::Int(-2_000_000_000));
    assert_eq!(m("test.f32"), MetaValue::Float(0.25));
    assert_eq!(m("test.u64"), MetaValue::UInt(1 << 60));
    assert_eq!(m("test.i64"), MetaValue::Int(-(1 << 60)));
    assert_eq!(m("test.f64"), MetaValue::Float(1e-300));
    assert_eq!(m("test.bool"), MetaValue::Bool(true));
    assert_eq!(m("test.string").as_str(), Some("héllo ✓"));
    assert_eq!(
        m("test.array_i32"),
        MetaValue::Array(vec![
            MetaValue::Int(1),
            MetaValue::Int(-2),
            MetaValue::Int(3)
        ])
    );
    let arr = m("test.array_str");
    let strs: Vec<&str> = arr
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a", "bc", ""]);
}

#[test]
fn every_storage_type_dequantizes_like_gguf_py() {
    let f = GgufFile::read(&fixture()).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().with_extension("json")).unwrap())
            .unwrap();
    let tensors = expected["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), 11);
    for (name, e) in tensors {
        let info = f.tensor(name).unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(info.ggml_type.name(), e["type"].as_str().unwrap(), "{name}");
        assert_eq!(info.shape, vec![2, 256], "{name}");
        let got = f.f32(name, &[2, 256]).unwrap();
        let want: Vec<f64> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{name}[{i}]: {g} vs {w}"
            );
        }
    }
    assert_eq!(f.parameter_count(), 11 * 512);
}

#[test]
fn q8_k_is_scale_times_int8() {
    let mut block = vec![0u8; 292];
    block[..4].copy_from_slice(&0.5f32.to_le_bytes());
    for (i, b) in block[4..260].iter_mut().enumerate() {
        *b = (i as i32 - 128) as i8 as u8;
    }
    let v = GgmlType::Q8K.dequantize(&block, 256).unwrap();
    assert_eq!(v[0], -64.0);
    assert_eq!(v[255], 63.5);
}

#[test]
fn wrong_shape_or_missing_tensor_is_named() {
    let f = GgufFile::read(&fixture()).unwrap();
    assert!(matches!(
        f.f32("t.q4_0", &[256, 2]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        f.f32("nope", &[1]),
        Err(Error::MissingTensor { .. })
    ));
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, Error> {
    GgufFile::parse(Path::new("test.gguf"), bytes)
}

#[test]
fn every_truncation_is_a_clean_error() {
    let bytes = std::fs::read(fixture()).unwrap();
    // The file ends with alignment padding after the last tensor; cut anywhere before that.
    let f = parse(bytes.clone()).unwrap();
    let end = f.tensors.iter().map(|t| t.offset + t.size).max().unwrap();
    for cut in (0..end).step_by(7).chain([end - 1]) {
        let err = parse(bytes[..cut].to_vec()).unwrap_err();
        assert!(err.to_string().contains("test.gguf"), "{err}");
    }
}

#[test]
fn lying_headers_are_refused() {
    let good = std::fs::read(fixture()).unwrap();
    // Bad magic, unsupported version.
    let mut b = good.clone();
    b[0] = b'X';
    assert!(parse(b).unwrap_err().to_string().contains("magic"));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(parse(b).unwrap_err().to_string().contains("version 9"));
    // A tensor count far beyond what the file can hold.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse(b).unwrap_err().to_string().contains("tensor count"));
    // A metadata count far beyond what the file can hold.
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(parse(b).unwrap_err().to_string().contains("metadata count"));
    // Random corruption anywhere in the header never panics.
    for i in 0..good.len().min(2048) {
        for v in [0u8, 0xff, 0x7f] {
            let mut b = good.clone();
            b[i] = v;
            let _ = parse(b);
        }
    }
}
