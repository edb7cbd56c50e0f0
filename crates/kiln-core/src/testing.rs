//! Tiny generated models for tests and examples: random weights, a small WordPiece vocabulary.
//! They exercise every code path of the real models in milliseconds and need no download.
//!
//! Also the checks that streamed detokenization shares between the unit tests and the tests
//! on real tokenizers ([`stream_checked`], [`random_id_sequences`]).

use crate::error::{Error, Result};
use crate::pooling::PoolingMode;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// The shape and pipeline of a generated BERT model.
#[derive(Debug, Clone)]
pub struct TinyBertSpec {
    /// Hidden width.
    pub hidden: usize,
    /// Number of layers.
    pub layers: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Size of the position table.
    pub max_position: usize,
    /// `max_seq_length` written to `sentence_bert_config.json`.
    pub max_seq_length: usize,
    /// Pooling mode written to `1_Pooling/config.json`.
    pub pooling: PoolingMode,
    /// Whether `modules.json` lists a Normalize module.
    pub normalize: bool,
    /// Seed of the weight generator.
    pub seed: u64,
}

impl Default for TinyBertSpec {
    fn default() -> Self {
        Self {
            hidden: 32,
            layers: 2,
            heads: 4,
            intermediate: 64,
            max_position: 64,
            max_seq_length: 32,
            pooling: PoolingMode::Mean,
            normalize: true,
            seed: 7,
        }
    }
}

/// The vocabulary of generated models: special tokens, letters, digits, punctuation, a few words.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in ('a'..='z').chain('0'..='9') {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    for p in ".,!?'\"-:;()".chars() {
        v.push(p.to_string());
    }
    for w in [
        "the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world", "kiln",
    ] {
        v.push(w.to_string());
    }
    v
}

/// A BERT-style `tokenizer.json` over [`tiny_vocab`].
pub fn tiny_tokenizer_json() -> serde_json::Value {
    let vocab: HashMap<String, usize> = tiny_vocab()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
                         special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// A deterministic xorshift generator of weights in `[-scale, scale)`.
struct WeightRng(u64);

impl WeightRng {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// Random BERT weights for `spec`, as `(name, shape, values)`, under PyTorch's names.
pub fn tiny_bert_tensors(spec: &TinyBertSpec) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = WeightRng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (h, i) = (spec.hidden, spec.intermediate);
    let vocab = tiny_vocab().len();
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, fill: Option<f32>| {
        let n: usize = shape.iter().product();
        let values = match fill {
            Some(c) => vec![c; n],
            None => (0..n).map(|_| rng.next(0.2)).collect(),
        };
        out.push((name, shape, values));
    };
    push(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab, h],
        None,
    );
    push(
        "embeddings.position_embeddings.weight".into(),
        vec![spec.max_position, h],
        None,
    );
    push(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, h],
        None,
    );
    push("embeddings.LayerNorm.weight".into(), vec![h], Some(1.0));
    push("embeddings.LayerNorm.bias".into(), vec![h], Some(0.0));
    for l in 0..spec.layers {
        let b = format!("encoder.layer.{l}");
        for (name, out_dim, in_dim) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            push(format!("{b}.{name}.weight"), vec![out_dim, in_dim], None);
            push(format!("{b}.{name}.bias"), vec![out_dim], None);
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            push(format!("{b}.{name}.weight"), vec![h], Some(1.0));
            push(format!("{b}.{name}.bias"), vec![h], Some(0.0));
        }
    }
    out
}

/// Serializes `(name, shape, values)` tensors as F32 safetensors bytes.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("shape matches data");
            (n.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize(views, None).expect("serializing in memory cannot fail")
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Writes a complete sentence-transformers directory for a random tiny BERT into `dir`.
pub fn write_tiny_bert(dir: &Path, spec: &TinyBertSpec) -> Result<()> {
    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": spec.hidden, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "intermediate_size": spec.intermediate,
        "max_position_embeddings": spec.max_position, "type_vocab_size": 2,
        "vocab_size": tiny_vocab().len(), "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute", "pad_token_id": 0
    });
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if spec.normalize {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    let pooling = json!({
        "word_embedding_dimension": spec.hidden,
        "pooling_mode_cls_token": spec.pooling == PoolingMode::Cls,
        "pooling_mode_mean_tokens": spec.pooling == PoolingMode::Mean,
        "pooling_mode_max_tokens": spec.pooling == PoolingMode::Max,
        "pooling_mode_mean_sqrt_len_tokens": spec.pooling == PoolingMode::MeanSqrtLen,
        "pooling_mode_lasttoken": spec.pooling == PoolingMode::LastToken,
    });
    let st = json!({"max_seq_length": spec.max_seq_length, "do_lower_case": false});
    let js = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
    write(&dir.join("config.json"), &js(&config))?;
    write(&dir.join("modules.json"), &js(&json!(modules)))?;
    write(&dir.join("1_Pooling/config.json"), &js(&pooling))?;
    write(&dir.join("sentence_bert_config.json"), &js(&st))?;
    write(&dir.join("tokenizer.json"), &js(&tiny_tokenizer_json()))?;
    write(
        &dir.join("model.safetensors"),
        &safetensors_bytes(&tiny_bert_tensors(spec)),
    )
}

/// Streams `ids` through a [`crate::text_stream::TextStream`] one token at a time, as the
/// engine does, and checks after each token that what the stream has shown is the start of the
/// whole decode of the ids so far. Returns the final text and the text shown after each token.
///
/// # Panics
/// If the stream ever shows text that is not a prefix of the whole decode, or the tokenizer
/// fails.
pub fn stream_checked(
    tokenizer: &crate::gguf_tokenizer::GgufTokenizer,
    ids: &[u32],
) -> (String, Vec<String>) {
    let mut s = crate::text_stream::TextStream::new();
    let mut shown = Vec::with_capacity(ids.len());
    for n in 1..=ids.len() {
        s.push(tokenizer, &ids[..n]).unwrap();
        let whole = tokenizer.decode(&ids[..n], true).unwrap();
        assert!(
            whole.starts_with(s.text()),
            "after {n} ids the stream shows {:?}, not a prefix of {whole:?}",
            s.text()
        );
        shown.push(s.text().to_string());
    }
    s.finish(tokenizer, ids).unwrap();
    (s.text().to_string(), shown)
}

/// `count` pseudo-random token id sequences below `vocab` (all 0 if `vocab` is 0), the `i`-th
/// `1 + i % max_len` long (a fixed xorshift seed, so every run tests the same ids).
pub fn random_id_sequences(vocab: u32, count: usize, max_len: usize) -> Vec<Vec<u32>> {
    let mut x = 0x2545_f491u32;
    (0..count)
        .map(|i| {
            (0..1 + i % max_len.max(1))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x % vocab.max(1)
                })
                .collect()
        })
        .collect()
}
