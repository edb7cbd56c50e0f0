//! The BERT encoder (BertModel), run over packed sequences without padding.
//!
//! Sequences of one batch are laid end to end: dense layers see one `[tokens, hidden]`
//! matrix, and attention is computed per sequence. No compute is spent on padding.

use crate::error::{Error, Result};
use crate::weights::TensorMap;
use kiln_kernels::activation::{gelu_erf, gelu_tanh, relu};
use kiln_kernels::attention::{packed_bidirectional, AttentionShape};
use kiln_kernels::linear::Linear;
use kiln_kernels::norm::{add_layer_norm, layer_norm};
use serde::Deserialize;
use std::path::Path;

/// The fields of a Hugging Face `config.json` that BERT needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// `model_type`; `bert` is supported.
    #[serde(default)]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu`, `gelu_new`, `gelu_pytorch_tanh` or `relu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Number of learned positions.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    /// Only `absolute` is supported.
    #[serde(default = "default_pos")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}
fn default_pos() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and validates the bytes of a `config.json`; `path` only labels errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let cfg: BertConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::config(path, e.to_string()))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if !matches!(self.model_type.as_str(), "bert" | "") {
            return Err(Error::Unsupported(format!(
                "{}: model_type `{}` (kiln's encoder supports `bert`)",
                path.display(),
                self.model_type
            )));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::Unsupported(format!(
                "{}: position_embedding_type `{}`",
                path.display(),
                self.position_embedding_type
            )));
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu"
        ) {
            return Err(Error::Unsupported(format!(
                "{}: hidden_act `{}`",
                path.display(),
                self.hidden_act
            )));
        }
        let dims = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        if dims.iter().any(|&d| d == 0 || d > 1 << 24) {
            return Err(Error::config(path, "a dimension is zero or absurdly large"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        Ok(())
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct EncoderLayer {
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A loaded BERT encoder.
pub struct BertModel {
    config: BertConfig,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
}

/// Finds the prefix (`""`, `"bert."`, ...) under which the encoder's tensors are stored.
fn tensor_prefix(weights: &TensorMap) -> Result<String> {
    const KEY: &str = "embeddings.word_embeddings.weight";
    let mut found: Vec<&str> = weights.names().filter(|n| n.ends_with(KEY)).collect();
    found.sort_by_key(|n| n.len());
    match found.first() {
        Some(name) => Ok(name[..name.len() - KEY.len()].to_string()),
        None => Err(Error::MissingTensor {
            path: weights.path().to_path_buf(),
            name: KEY.to_string(),
        }),
    }
}

impl BertModel {
    /// Builds the encoder from `weights`, checking every tensor's shape against `config`.
    pub fn load(config: BertConfig, weights: &TensorMap) -> Result<Self> {
        let p = tensor_prefix(weights)?;
        let h = config.hidden_size;
        let i = config.intermediate_size;
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
            let w = weights.f32(&format!("{p}{name}.weight"), &[out, inp])?;
            let b = weights.f32(&format!("{p}{name}.bias"), &[out])?;
            Ok(Linear::from_torch(&w, Some(b), out, inp))
        };
        let norm = |name: &str| -> Result<LayerNorm> {
            // Old TF-converted checkpoints name these gamma/beta.
            let (g, b) = if weights.contains(&format!("{p}{name}.weight")) {
                ("weight", "bias")
            } else {
                ("gamma", "beta")
            };
            Ok(LayerNorm {
                gamma: weights.f32(&format!("{p}{name}.{g}"), &[h])?,
                beta: weights.f32(&format!("{p}{name}.{b}"), &[h])?,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let base = format!("encoder.layer.{l}");
            let q = linear(&format!("{base}.attention.self.query"), h, h)?;
            let k = linear(&format!("{base}.attention.self.key"), h, h)?;
            let v = linear(&format!("{base}.attention.self.value"), h, h)?;
            layers.push(EncoderLayer {
                qkv: Linear::concat(&[q, k, v]),
                attention_output: linear(&format!("{base}.attention.output.dense"), h, h)?,
                attention_norm: norm(&format!("{base}.attention.output.LayerNorm"))?,
                intermediate: linear(&format!("{base}.intermediate.dense"), i, h)?,
                output: linear(&format!("{base}.output.dense"), h, i)?,
                output_norm: norm(&format!("{base}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word_embeddings: weights.f32(
                &format!("{p}embeddings.word_embeddings.weight"),
                &[config.vocab_size, h],
            )?,
            position_embeddings: weights.f32(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[config.max_position_embeddings, h],
            )?,
            token_type_embeddings: weights.f32(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[config.type_vocab_size, h],
            )?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Width of the hidden states the model returns.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Runs the encoder over `sequences` (token ids, token type 0) and returns their last
    /// hidden states packed as `[total tokens, hidden]`, sequence after sequence.
    ///
    /// Every id must be below `vocab_size` and every sequence at most
    /// `max_position_embeddings` long; [`BertModel::check_input`] tells.
    pub fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        for s in sequences {
            self.check_input(s)?;
        }
        let h = self.config.hidden_size;
        let lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let rows: usize = lens.iter().sum();

        let mut hidden = vec![0.0f32; rows * h];
        for (row, (pos, &id)) in hidden
            .chunks_exact_mut(h)
            .zip(sequences.iter().flat_map(|s| s.iter().enumerate()))
        {
            let word = &self.word_embeddings[id as usize * h..(id as usize + 1) * h];
            let position = &self.position_embeddings[pos * h..(pos + 1) * h];
            let token_type = &self.token_type_embeddings[..h];
            for (((o, w), p), t) in row.iter_mut().zip(word).zip(position).zip(token_type) {
                *o = w + p + t;
            }
        }
        let eps = self.config.layer_norm_eps;
        layer_norm(
            &mut hidden,
            &self.embedding_norm.gamma,
            &self.embedding_norm.beta,
            eps,
        );

        let shape = AttentionShape {
            heads: self.config.num_attention_heads,
            head_dim: h / self.config.num_attention_heads,
        };
        let mut qkv = vec![0.0f32; rows * 3 * h];
        let mut context = vec![0.0f32; rows * h];
        let mut projected = vec![0.0f32; rows * h];
        let mut intermediate = vec![0.0f32; rows * self.config.intermediate_size];
        for layer in &self.layers {
            layer.qkv.forward(&hidden, rows, &mut qkv);
            packed_bidirectional(&qkv, &lens, shape, &mut context);
            layer
                .attention_output
                .forward(&context, rows, &mut projected);
            add_layer_norm(
                &mut projected,
                &hidden,
                &layer.attention_norm.gamma,
                &layer.attention_norm.beta,
                eps,
            );
            std::mem::swap(&mut hidden, &mut projected);
            layer.intermediate.forward(&hidden, rows, &mut intermediate);
            self.activate(&mut intermediate);
            layer.output.forward(&intermediate, rows, &mut projected);
            add_layer_norm(
                &mut projected,
                &hidden,
                &layer.output_norm.gamma,
                &layer.output_norm.beta,
                eps,
            );
            std::mem::swap(&mut hidden, &mut projected);
        }
        Ok(hidden)
    }

    /// Checks that a sequence fits the model: non-empty, not longer than the position table, ids in the vocabulary.
    pub fn check_input(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Tokenizer("empty token sequence".into()));
        }
        if ids.len() > self.config.max_position_embeddings {
            return Err(Error::InputTooLong {
                index: 0,
                tokens: ids.len(),
                max: self.config.max_position_embeddings,
            });
        }
        if let Some(bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    fn activate(&self, x: &mut [f32]) {
        match self.config.hidden_act.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => gelu_tanh(x),
            "relu" => relu(x),
            _ => gelu_erf(x),
        }
    }
}
