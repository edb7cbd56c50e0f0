//! PyTorch checkpoints written by real `torch.save` (fixtures from
//! scripts/reference/make_pickle_fixtures.py), read without executing pickle code.

use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::weights::{DType, TensorMap};
use kiln_core::{EmbedderOptions, Error, SentenceEmbedder};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pickle")
        .join(name)
}

fn values(t: &kiln_core::weights::RawTensor) -> Vec<f64> {
    let d = &t.data;
    match t.dtype {
        DType::F32 => d
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::F16 => d
            .chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DType::BF16 => d
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DType::F64 => d
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::I64 => d
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::I32 => d
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::U8 | DType::Bool => d.iter().map(|&b| b as f64).collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

#[test]
fn every_dtype_view_and_shared_storage_matches_torch() {
    let map = TensorMap::load(&fixture("variety.bin")).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("variety.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(map.names().count(), expected.len());
    for (name, e) in expected {
        let t = map.raw(name).unwrap_or_else(|| panic!("missing {name}"));
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        let want: Vec<f64> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(values(t), want, "{name}");
    }
    assert_eq!(map.raw("bf16").unwrap().dtype, DType::BF16);
    assert_eq!(map.raw("bool").unwrap().dtype, DType::Bool);
}

#[test]
fn a_torch_saved_bert_loads_identically_to_its_safetensors() {
    let st = TensorMap::load(&fixture("tiny_bert.safetensors")).unwrap();
    let pt = TensorMap::load(&fixture("tiny_bert.bin")).unwrap();
    let mut names: Vec<&str> = st.names().collect();
    names.sort();
    let mut pt_names: Vec<&str> = pt.names().collect();
    pt_names.sort();
    assert_eq!(names, pt_names);
    for n in names {
        assert_eq!(st.raw(n).unwrap().data, pt.raw(n).unwrap().data, "{n}");
        assert_eq!(st.raw(n).unwrap().shape, pt.raw(n).unwrap().shape, "{n}");
    }
}

#[test]
fn a_model_directory_with_only_pytorch_model_bin_embeds_the_same() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let from_st = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    // The committed fixture is the same tiny model, saved by torch.
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(fixture("tiny_bert.safetensors")).unwrap()
    );
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(
        fixture("tiny_bert.bin"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let from_pt = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    let texts = ["hello world", "the cat sat on the mat"];
    assert_eq!(
        from_st.embed(&texts).unwrap(),
        from_pt.embed(&texts).unwrap()
    );
}

#[test]
fn pickles_that_call_code_are_refused_and_nothing_runs() {
    let _ = std::fs::remove_file("/tmp/kiln_pwned");
    for (file, global) in [
        ("hostile_os_system.bin", "system"),
        ("hostile_eval.bin", "builtin__.eval"),
    ] {
        let err = TensorMap::load(&fixture(file)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Weights { .. }), "{msg}");
        assert!(
            msg.contains("refused") && msg.contains(global),
            "{file}: {msg}"
        );
        assert!(msg.contains(file), "the error names the file: {msg}");
    }
    assert!(
        !std::path::Path::new("/tmp/kiln_pwned").exists(),
        "code from a pickle ran"
    );
}

#[test]
fn broken_checkpoints_are_clean_errors() {
    for (file, needle) in [
        ("truncated_pickle.bin", "truncated"),
        ("short_storage.bin", "storage"),
        ("legacy.bin", "legacy"),
    ] {
        let err = TensorMap::load(&fixture(file)).unwrap_err().to_string();
        assert!(err.contains(needle), "{file}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("pytorch_model.bin");
    std::fs::write(&garbage, b"PK\x03\x04 not really a zip").unwrap();
    assert!(TensorMap::load(&garbage).is_err());
}

#[test]
fn a_checkpoint_in_memory_parses_like_the_file() {
    let path = fixture("variety.bin");
    let from_file = TensorMap::load(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let from_bytes =
        kiln_core::weights::pickle::parse_checkpoint(std::path::Path::new("mem.bin"), &bytes)
            .unwrap();
    let mut names: Vec<&str> = from_file.names().collect();
    names.sort();
    let mut mem_names: Vec<&str> = from_bytes.names().collect();
    mem_names.sort();
    assert_eq!(names, mem_names);
    for n in names {
        let (a, b) = (from_file.raw(n).unwrap(), from_bytes.raw(n).unwrap());
        assert_eq!((&a.shape, &a.data), (&b.shape, &b.data), "{n}");
    }
    assert_eq!(from_bytes.path(), std::path::Path::new("mem.bin"));
}
