//! Parity with sentence-transformers on the real all-MiniLM-L6-v2.
//!
//! The reference vectors in tests/data/minilm_reference.json were written by
//! scripts/reference/make_embedding_reference.py running sentence-transformers itself.
//! The model comes from `kiln fetch` (the README's test command fetches it first).

use kiln_core::{EmbedderOptions, SentenceEmbedder};
use serde_json::Value;
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("KILN_MINILM_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real model is missing at {}: run `cargo run --release -p kiln-cli -- fetch` (or scripts/test.sh)",
        dir.display()
    );
    dir
}

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/minilm_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pipeline_is_read_from_the_model_files() {
    let m = SentenceEmbedder::load(&model_dir(), &EmbedderOptions::default()).unwrap();
    assert_eq!(m.dimension(), 384);
    assert_eq!(
        m.max_tokens(),
        256,
        "sentence_bert_config.json max_seq_length"
    );
    assert!(m.normalizes(), "modules.json lists Normalize");
    assert_eq!(m.pipeline().pooling, vec![kiln_core::PoolingMode::Mean]);
}

#[test]
fn token_ids_match_sentence_transformers() {
    let m = SentenceEmbedder::load(&model_dir(), &EmbedderOptions::default()).unwrap();
    let r = reference();
    for item in r["items"].as_array().unwrap() {
        let text = item["text"].as_str().unwrap();
        let expected: Vec<u32> = item["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            m.tokenize(text, true).unwrap().ids,
            expected,
            "token ids of {text:?}"
        );
    }
}

#[test]
fn embeddings_match_sentence_transformers_one_by_one_and_batched() {
    let m = SentenceEmbedder::load(&model_dir(), &EmbedderOptions::default()).unwrap();
    let r = reference();
    let items = r["items"].as_array().unwrap();
    assert!(items.len() >= 20);
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let batched = m.embed(&texts).unwrap();
    let mut worst = (1.0f64, 0.0f32);
    for (i, item) in items.iter().enumerate() {
        let expected = floats(&item["embedding"]);
        let single = m.embed(&[texts[i]]).unwrap().remove(0);
        for got in [&single, &batched[i]] {
            let cos = cosine(got, &expected);
            let diff = max_abs_diff(got, &expected);
            assert!(cos >= 0.99999, "input {i} {:?}: cosine {cos}", texts[i]);
            assert!(
                diff <= 1e-4,
                "input {i} {:?}: max abs diff {diff}",
                texts[i]
            );
            worst = (worst.0.min(cos), worst.1.max(diff));
        }
    }
    eprintln!(
        "worst cosine {:.8}, worst max abs diff {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn unnormalized_mean_pooling_matches() {
    let m = SentenceEmbedder::load(&model_dir(), &EmbedderOptions::default()).unwrap();
    let r = reference();
    for item in r["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("embedding_unnormalized").is_some())
    {
        let ids = m
            .tokenize(item["text"].as_str().unwrap(), true)
            .unwrap()
            .ids;
        let got = m.embed_tokens(&[&ids], false).unwrap().remove(0);
        let expected = floats(&item["embedding_unnormalized"]);
        assert!(max_abs_diff(&got, &expected) <= 1e-4, "{}", item["text"]);
    }
}
