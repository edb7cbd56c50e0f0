//! Behaviour of the embedding pipeline on generated tiny BERT models.

use kiln_core::models::bert::{BertConfig, BertModel};
use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::weights::TensorMap;
use kiln_core::{EmbedderOptions, Error, PoolingMode, SentenceEmbedder};
use std::path::Path;

fn model_with(spec: &TinyBertSpec) -> (tempfile::TempDir, SentenceEmbedder) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), spec).unwrap();
    let m = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    (dir, m)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn normalized_mean_pooling_from_the_model_files() {
    let (_d, m) = model_with(&TinyBertSpec::default());
    assert_eq!(m.dimension(), 32);
    assert!(m.normalizes());
    let v = m.embed(&["the cat sat on the mat"]).unwrap();
    assert_eq!(v[0].len(), 32);
    assert!((norm(&v[0]) - 1.0).abs() < 1e-5);
}

#[test]
fn no_normalize_module_means_raw_vectors() {
    let (_d, m) = model_with(&TinyBertSpec {
        normalize: false,
        ..Default::default()
    });
    assert!(!m.normalizes());
    let v = m.embed(&["hello world"]).unwrap();
    assert!((norm(&v[0]) - 1.0).abs() > 1e-3, "norm {}", norm(&v[0]));
}

#[test]
fn a_sequence_embeds_the_same_alone_and_inside_a_packed_batch() {
    let (_d, m) = model_with(&TinyBertSpec::default());
    let texts = [
        "a",
        "the dog sat on the kiln mat",
        "hello, world!",
        "x y z 1 2 3",
    ];
    let batch = m.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let alone = m.embed(&[t]).unwrap();
        assert!(
            max_diff(&alone[0], &batch[i]) < 1e-5,
            "input {i} differs in a batch"
        );
    }
    assert!(
        max_diff(&batch[0], &batch[1]) > 1e-3,
        "different inputs must differ"
    );
}

#[test]
fn pooling_modes_follow_the_pooling_config() {
    let text = "the cat sat";
    let spec = TinyBertSpec {
        normalize: false,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &spec).unwrap();
    // Token states straight from the encoder, to pool by hand.
    let cfg = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
    let weights = TensorMap::load(&dir.path().join("model.safetensors")).unwrap();
    let bert = BertModel::load(cfg, &weights).unwrap();
    let (_d, mean_model) = model_with(&spec);
    let ids = mean_model.tokenize(text, true).unwrap().ids;
    let states = bert.forward(&[&ids]).unwrap();
    let rows: Vec<&[f32]> = states.chunks(32).collect();

    let cls = model_with(&TinyBertSpec {
        pooling: PoolingMode::Cls,
        ..spec.clone()
    })
    .1;
    assert_eq!(cls.embed(&[text]).unwrap()[0], rows[0]);

    let max = model_with(&TinyBertSpec {
        pooling: PoolingMode::Max,
        ..spec.clone()
    })
    .1;
    let expected_max: Vec<f32> = (0..32)
        .map(|c| rows.iter().map(|r| r[c]).fold(f32::MIN, f32::max))
        .collect();
    assert_eq!(max.embed(&[text]).unwrap()[0], expected_max);

    let expected_mean: Vec<f32> = (0..32)
        .map(|c| rows.iter().map(|r| r[c]).sum::<f32>() / rows.len() as f32)
        .collect();
    assert!(max_diff(&mean_model.embed(&[text]).unwrap()[0], &expected_mean) < 1e-6);
}

#[test]
fn long_inputs_are_truncated_or_rejected() {
    let (_d, m) = model_with(&TinyBertSpec {
        max_seq_length: 10,
        ..Default::default()
    });
    let long = "the cat sat on the mat and the dog sat on the kiln";
    let t = m.tokenize(long, true).unwrap();
    assert_eq!(t.ids.len(), 10);
    assert!(t.truncated);
    assert_eq!(
        *t.ids.last().unwrap(),
        3,
        "truncation keeps the final [SEP]"
    );
    match m.tokenize(long, false) {
        Err(Error::InputTooLong { tokens, max, .. }) => {
            assert_eq!(max, 10);
            assert_eq!(tokens, 17, "15 word pieces plus [CLS] and [SEP]");
        }
        other => panic!("expected InputTooLong, got {other:?}"),
    }
    let short = m.tokenize("hello", false).unwrap();
    assert!(!short.truncated);
    assert_eq!(short.ids.len(), 3);
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    for file in ["tokenizer.json", "config.json", "model.safetensors"] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        std::fs::remove_file(copy.path().join(file)).unwrap();
        let err = SentenceEmbedder::load(copy.path(), &EmbedderOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
    let err = SentenceEmbedder::load(Path::new("/nonexistent/model"), &EmbedderOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}

#[test]
fn missing_modules_json_needs_an_explicit_pooling() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    std::fs::remove_file(dir.path().join("modules.json")).unwrap();
    let err = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("modules.json"), "{err}");
    let m = SentenceEmbedder::load(
        dir.path(),
        &EmbedderOptions {
            pooling: Some(PoolingMode::Cls),
        },
    )
    .unwrap();
    assert!(!m.normalizes());
}

#[test]
fn truncated_weights_are_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Weights { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
}

#[test]
fn weights_that_disagree_with_the_config_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let cfg_path = dir.path().join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default())
        .err()
        .unwrap();
    match err {
        Error::ShapeMismatch {
            name,
            expected,
            actual,
            ..
        } => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, vec![48, 32]);
            assert_eq!(actual, vec![64, 32]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn unsupported_modules_and_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let modules = dir.path().join("modules.json");
    let text = std::fs::read_to_string(&modules)
        .unwrap()
        .replace("models.Normalize", "models.Dense");
    std::fs::write(&modules, text).unwrap();
    let err = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("Dense"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"bert\"").unwrap();
    let err = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file of a model directory, by its path inside the directory (`/`-separated).
fn files_of(dir: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p
                    .strip_prefix(dir)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn loading_from_files_in_memory_equals_loading_the_directory() {
    for spec in [
        TinyBertSpec::default(),
        TinyBertSpec {
            normalize: false,
            ..TinyBertSpec::default()
        },
    ] {
        let (d, from_dir) = model_with(&spec);
        let files = files_of(d.path());
        assert!(
            files.contains_key("1_Pooling/config.json"),
            "{:?}",
            files.keys()
        );
        let get = |name: &str| files.get(name).map(Vec::as_slice);
        let from_mem = SentenceEmbedder::from_files(&get, &EmbedderOptions::default()).unwrap();
        assert_eq!(from_mem.pipeline(), from_dir.pipeline());
        assert_eq!(from_mem.max_tokens(), from_dir.max_tokens());
        let texts = ["the cat sat on the mat", "a dog"];
        assert_eq!(
            from_mem.embed(&texts).unwrap(),
            from_dir.embed(&texts).unwrap()
        );
    }
}

#[test]
fn loading_from_files_in_memory_names_a_missing_file() {
    let (d, _) = model_with(&TinyBertSpec::default());
    let all = files_of(d.path());
    let mut files = all.clone();
    files.remove("tokenizer.json");
    let get = |name: &str| files.get(name).map(Vec::as_slice);
    let err = SentenceEmbedder::from_files(&get, &EmbedderOptions::default())
        .err()
        .expect("no tokenizer");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let mut files = all;
    files.remove("1_Pooling/config.json");
    let get = |name: &str| files.get(name).map(Vec::as_slice);
    let err = SentenceEmbedder::from_files(&get, &EmbedderOptions::default())
        .err()
        .expect("no pooling config");
    assert!(err.to_string().contains("1_Pooling"), "{err}");
}
