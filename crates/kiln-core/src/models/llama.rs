//! The Llama decoder family as GGUF files describe it: RMSNorm, rotary positions, grouped-query
//! causal attention with a KV cache, and a gated feed-forward. Four architectures share it:
//!
//! - `llama` (SmolLM2, Llama): RoPE on consecutive pairs (ggml's "normal" RoPE, which GGUF
//!   converters arrange the weights for), SwiGLU.
//! - `qwen2`: as `llama` with biases on the query/key/value projections and RoPE on halves
//!   (ggml's "NeoX" RoPE).
//! - `qwen3`: as `qwen2` without the biases, with an RMSNorm of each query and key head before
//!   RoPE, and heads whose width need not be the hidden width over the head count.
//! - `gemma3`: embeddings scaled by `√hidden`, RMSNorm of each query/key head, norms after the
//!   attention and feed-forward blocks too, GELU (tanh) gating, NeoX RoPE, and five of every six
//!   layers attending within a sliding window with their own RoPE base.
//!
//! The arithmetic follows llama.cpp's CPU backend where it affects results: RMSNorm sums in
//! `f64`, RoPE angles are built by repeated `f32` multiplication, the KV cache and the queries
//! meeting it are `f16`, and GELU goes through `f16` as ggml's lookup table does.

use crate::error::{Error, Result};
use crate::weights::ggml::GgmlType;
use crate::weights::gguf::{GgufFile, MetaValue};
use crate::weights::TensorMap;
use kiln_kernels::causal_attention::{causal_cached_many, f16_cache_pays, CausalJob, CausalShape};
use kiln_kernels::linear::Linear;
use kiln_kernels::norm::{rms_norm, rms_norm_in_place};
use kiln_kernels::parallel::for_each_row_mut;
use kiln_kernels::quant::{
    f32_to_half_slice, half_to_f32, round_to_f16, round_to_f16_slice, QuantFormat, QuantLinear,
    QuantizedInput,
};
use kiln_kernels::swiglu::swiglu;
use std::path::Path;

pub use super::kv_cache::KvCache;

/// A dense layer: ggml-quantized weights computed like llama.cpp (one part per stacked tensor,
/// each in its own format), or `f32` weights.
enum Dense {
    F32(Linear),
    Quant(Vec<QuantLinear>),
}

/// The kernel format of a ggml type, where kiln-kernels multiplies it without dequantizing.
fn quant_format(t: GgmlType) -> Option<QuantFormat> {
    Some(match t {
        GgmlType::Q4_0 => QuantFormat::Q4_0,
        GgmlType::Q4_1 => QuantFormat::Q4_1,
        GgmlType::Q5_0 => QuantFormat::Q5_0,
        GgmlType::Q8_0 => QuantFormat::Q8_0,
        GgmlType::Q4K => QuantFormat::Q4K,
        GgmlType::Q6K => QuantFormat::Q6K,
        _ => return None,
    })
}

impl Dense {
    /// Loads and stacks (along the output) the weights `names` of shapes `[outs[i], inp]`.
    fn load(f: &GgufFile, names: &[String], outs: &[usize], inp: usize) -> Result<Self> {
        let mut formats = Vec::new();
        for (name, &out) in names.iter().zip(outs) {
            let info = f.tensor(name).ok_or_else(|| Error::MissingTensor {
                path: f.path().to_path_buf(),
                name: name.clone(),
            })?;
            if info.shape != [out, inp] {
                return Err(Error::ShapeMismatch {
                    path: f.path().to_path_buf(),
                    name: name.clone(),
                    expected: vec![out, inp],
                    actual: info.shape.clone(),
                });
            }
            formats
                .push(quant_format(info.ggml_type).filter(|q| inp.is_multiple_of(q.block_len())));
        }
        if formats.iter().all(Option::is_some) {
            let parts = names
                .iter()
                .zip(outs)
                .zip(formats)
                .map(|((name, &out), format)| {
                    let info = f.tensor(name).expect("checked above");
                    let format = format.expect("checked above");
                    // The blocks stay in the file's bytes: no copy.
                    if info.packed {
                        QuantLinear::from_shared_packed(
                            format,
                            f.shared_bytes(),
                            info.offset,
                            out,
                            inp,
                        )
                    } else {
                        QuantLinear::from_shared(format, f.shared_bytes(), info.offset, out, inp)
                    }
                })
                .collect();
            return Ok(Dense::Quant(parts));
        }
        let layers = names
            .iter()
            .zip(outs)
            .map(|(name, &out)| {
                Ok(Linear::from_torch(
                    &f.f32(name, &[out, inp])?,
                    None,
                    out,
                    inp,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dense::F32(Linear::concat(&layers)))
    }

    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        match self {
            Dense::F32(l) => l.forward(x, rows, out),
            Dense::Quant(parts) if parts.len() == 1 => parts[0].forward(x, rows, out),
            Dense::Quant(parts) => {
                // Parts of one block length share the quantized input (same bits either way);
                // each part fills its own columns of the stacked output, all in one pass.
                let mut inputs: Vec<QuantizedInput> = Vec::new();
                let mut which = Vec::with_capacity(parts.len());
                for p in parts {
                    let i = match inputs.iter().position(|i| i.suits(p)) {
                        Some(i) => i,
                        None => {
                            inputs.push(p.quantize_input(x, rows));
                            inputs.len() - 1
                        }
                    };
                    which.push(i);
                }
                let stacked: Vec<(&QuantLinear, &QuantizedInput)> = parts
                    .iter()
                    .zip(which)
                    .map(|(p, i)| (p, &inputs[i]))
                    .collect();
                QuantLinear::forward_stacked(&stacked, out);
            }
        }
    }
}

/// Where a model's tensors come from; tensors are always named as in GGUF files.
enum Weights<'a> {
    Gguf(&'a GgufFile),
    /// A Hugging Face checkpoint, whose names [`hf_name`] translates.
    Hf(&'a TensorMap),
}

/// The Hugging Face (transformers) name of a GGUF tensor name of the Llama family.
fn hf_name(gguf: &str) -> String {
    match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let Some(rest) = gguf.strip_prefix("blk.") else {
        return gguf.into();
    };
    let mut it = rest.splitn(3, '.');
    let (Some(layer), Some(part), Some(suffix)) = (it.next(), it.next(), it.next()) else {
        return gguf.into();
    };
    let part = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => other,
    };
    format!("model.layers.{layer}.{part}.{suffix}")
}

impl Weights<'_> {
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self {
            Weights::Gguf(f) => f.f32(name, shape),
            Weights::Hf(m) => m.f32(&hf_name(name), shape),
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Weights::Gguf(f) => f.tensor(name).is_some(),
            Weights::Hf(m) => m.contains(&hf_name(name)),
        }
    }

    fn dense(&self, names: &[String], outs: &[usize], inp: usize) -> Result<Dense> {
        match self {
            Weights::Gguf(f) => Dense::load(f, names, outs, inp),
            Weights::Hf(_) => {
                let layers = names
                    .iter()
                    .zip(outs)
                    .map(|(name, &out)| {
                        Ok(Linear::from_torch(
                            &self.f32(name, &[out, inp])?,
                            None,
                            out,
                            inp,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Dense::F32(Linear::concat(&layers)))
            }
        }
    }
}

/// The decoder architectures kiln runs, from `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `llama`: SmolLM2, Llama 2/3, Mistral-style files.
    Llama,
    /// `qwen2`: Qwen 2 / 2.5.
    Qwen2,
    /// `gemma3`: Gemma 3 (text).
    Gemma3,
    /// `qwen3`: Qwen 3 (dense).
    Qwen3,
}

impl Family {
    fn from_arch(arch: &str) -> Option<Self> {
        match arch {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "gemma3" => Some(Family::Gemma3),
            "qwen3" => Some(Family::Qwen3),
            _ => None,
        }
    }

    /// Whether RoPE rotates halves of each head (NeoX) rather than consecutive pairs.
    fn neox_rope(self) -> bool {
        self != Family::Llama
    }
}

/// Hyper-parameters read from a GGUF file's `<arch>.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Architecture name (`general.architecture`).
    pub arch: String,
    /// The architecture family.
    pub family: Family,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency (of the global-attention layers).
    pub rope_base: f32,
    /// RoPE position scale (`1 / rope.scaling.factor` for linear scaling, else 1).
    pub rope_scale: f32,
    /// Sliding-window layers: the window length and those layers' RoPE base.
    pub sliding_window: Option<(usize, f32)>,
    /// Longest context the model was trained for.
    pub context_length: usize,
    /// Whether RoPE rotates the two halves of each head (NeoX, Hugging Face layout) rather than
    /// consecutive pairs (the layout GGUF converters give `llama` weights).
    pub rope_neox: bool,
    /// Whether the KV cache and the queries meeting it are rounded to `f16`, as llama.cpp does
    /// (GGUF models); SafeTensors models compute in `f32` throughout, as transformers does.
    pub f16_kv: bool,
}

fn meta_usize(f: &GgufFile, key: &str) -> Result<usize> {
    f.meta(key)
        .and_then(MetaValue::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0 && v < 1 << 24)
        .ok_or_else(|| Error::weights(f.path(), format!("metadata `{key}` is missing or invalid")))
}

impl LlamaConfig {
    /// Reads the configuration of a `llama`, `qwen2`, `qwen3` or `gemma3` GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| Error::weights(f.path(), "metadata `general.architecture` is missing"))?
            .to_string();
        let family = Family::from_arch(&arch).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: architecture `{arch}` (kiln's decoder supports `llama`, `qwen2`, `qwen3` and `gemma3`)",
                f.path().display()
            ))
        })?;
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = meta_usize(f, &k("embedding_length"))?;
        let heads = meta_usize(f, &k("attention.head_count"))?;
        let kv_heads = meta_usize(f, &k("attention.head_count_kv")).unwrap_or(heads);
        let head_dim = match f.meta(&k("attention.key_length")) {
            Some(_) => meta_usize(f, &k("attention.key_length"))?,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(Error::weights(
                    f.path(),
                    format!("{hidden} hidden does not divide into {heads} heads"),
                ))
            }
        };
        if heads % kv_heads != 0 || head_dim % 2 != 0 {
            return Err(Error::weights(
                f.path(),
                format!("{heads} heads, {kv_heads} KV heads and head width {head_dim} do not fit"),
            ));
        }
        if let Some(v) = f.meta(&k("attention.value_length")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(Error::Unsupported(format!(
                    "{}: value heads of another width than key heads",
                    f.path().display()
                )));
            }
        }
        let vocab_size = f
            .meta("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map(<[MetaValue]>::len)
            .or_else(|| {
                f.meta(&k("vocab_size"))
                    .and_then(MetaValue::as_u64)
                    .map(|v| v as usize)
            })
            .ok_or_else(|| Error::weights(f.path(), "the vocabulary size is unknown"))?;
        if let Some(rope_dims) = f
            .meta(&k("rope.dimension_count"))
            .and_then(MetaValue::as_u64)
        {
            if rope_dims as usize != head_dim {
                return Err(Error::Unsupported(format!(
                    "{}: partial rotary embeddings ({rope_dims} of {head_dim} dims)",
                    f.path().display()
                )));
            }
        }
        let rope_scale = match f.meta(&k("rope.scaling.type")).and_then(MetaValue::as_str) {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = f
                    .meta(&k("rope.scaling.factor"))
                    .and_then(MetaValue::as_f64)
                    .filter(|&x| x > 0.0)
                    .unwrap_or(1.0);
                (1.0 / factor) as f32
            }
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "{}: RoPE scaling `{other}`",
                    f.path().display()
                )))
            }
        };
        // Gemma 3's local layers use RoPE base 10000 whatever the file's global base.
        let sliding_window = match family {
            Family::Gemma3 => Some((meta_usize(f, &k("attention.sliding_window"))?, 10_000.0)),
            _ => None,
        };
        Ok(Self {
            family,
            vocab_size,
            hidden,
            layers: meta_usize(f, &k("block_count"))?,
            heads,
            kv_heads,
            head_dim,
            ffn: meta_usize(f, &k("feed_forward_length"))?,
            rms_eps: f
                .meta(&k("attention.layer_norm_rms_epsilon"))
                .and_then(MetaValue::as_f64)
                .unwrap_or(1e-5) as f32,
            rope_base: f
                .meta(&k("rope.freq_base"))
                .and_then(MetaValue::as_f64)
                .unwrap_or(10_000.0) as f32,
            rope_scale,
            sliding_window,
            context_length: meta_usize(f, &k("context_length"))?,
            rope_neox: family.neox_rope(),
            f16_kv: true,
            arch,
        })
    }

    /// Reads a Hugging Face `config.json` of a `llama`, `mistral`, `qwen2` or `qwen3` model.
    pub fn from_hf_config(path: &Path, json: &serde_json::Value) -> Result<Self> {
        let model_type = json["model_type"].as_str().unwrap_or("");
        let family = match model_type {
            "llama" | "mistral" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: model_type `{other}` from SafeTensors (kiln reads `llama`, `mistral`, `qwen2` and `qwen3` checkpoints)",
                    path.display()
                )))
            }
        };
        let get = |key: &str| -> Result<usize> {
            json[key]
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0 && v < 1 << 24)
                .ok_or_else(|| Error::weights(path, format!("`{key}` is missing or invalid")))
        };
        let hidden = get("hidden_size")?;
        let heads = get("num_attention_heads")?;
        let kv_heads = get("num_key_value_heads").unwrap_or(heads);
        let head_dim = match json.get("head_dim").filter(|v| !v.is_null()) {
            Some(_) => get("head_dim")?,
            None if hidden % heads == 0 => hidden / heads,
            None => return Err(Error::weights(path, "heads do not divide the hidden size")),
        };
        if heads % kv_heads != 0 || head_dim % 2 != 0 {
            return Err(Error::weights(
                path,
                format!("{heads} heads, {kv_heads} KV heads and head width {head_dim} do not fit"),
            ));
        }
        let rope_base = json["rope_theta"]
            .as_f64()
            .or_else(|| json["rope_parameters"]["rope_theta"].as_f64())
            .unwrap_or(10_000.0) as f32;
        let scaling = json
            .get("rope_scaling")
            .filter(|v| !v.is_null())
            .or_else(|| json.get("rope_parameters"))
            .and_then(|v| v.get("rope_type").or_else(|| v.get("type")))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default");
        if scaling != "default" {
            return Err(Error::Unsupported(format!(
                "{}: RoPE scaling `{scaling}`",
                path.display()
            )));
        }
        // Qwen's checkpoints say whether their layers attend within a window.
        if json["use_sliding_window"].as_bool() == Some(true) {
            return Err(Error::Unsupported(format!(
                "{}: sliding-window attention (`use_sliding_window`)",
                path.display()
            )));
        }
        Ok(Self {
            arch: model_type.to_string(),
            family,
            vocab_size: get("vocab_size")?,
            hidden,
            layers: get("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            ffn: get("intermediate_size")?,
            rms_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            rope_base,
            rope_scale: 1.0,
            sliding_window: None,
            context_length: get("max_position_embeddings")?,
            rope_neox: true,
            f16_kv: false,
        })
    }

    /// Width of all query heads together.
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The sliding window of layer `l`, if it attends within one (Gemma 3: all but every sixth).
    pub fn window_of(&self, l: usize) -> Option<usize> {
        self.sliding_window
            .filter(|_| l % 6 < 5)
            .map(|(window, _)| window)
    }
}

/// RMSNorm of each query head and each key head, before RoPE (Gemma 3, Qwen 3).
struct HeadNorms {
    /// Weights of a query head's norm (`head_dim` values, shared by the heads).
    q: Vec<f32>,
    /// Weights of a key head's norm.
    k: Vec<f32>,
}

/// RMSNorm of the attention's and the feed-forward's outputs (Gemma 3).
struct PostNorms {
    /// After the attention's output projection.
    attn: Vec<f32>,
    /// After the feed-forward.
    ffn: Vec<f32>,
}

struct Block {
    attn_norm: Vec<f32>,
    qkv: Dense,
    /// Biases of the fused query/key/value projection (Qwen2).
    qkv_bias: Option<Vec<f32>>,
    attn_output: Dense,
    ffn_norm: Vec<f32>,
    gate_up: Dense,
    down: Dense,
    head_norms: Option<HeadNorms>,
    post_norms: Option<PostNorms>,
}

/// Where token embeddings are read from.
enum Embeddings {
    /// A dequantized table, `[vocab, hidden]`.
    Table(Vec<f32>),
    /// Rows of the (tied, quantized) output matrix, dequantized on lookup.
    TiedOutput,
}

/// A loaded decoder of the Llama family (see the module docs for the architectures).
pub struct LlamaModel {
    config: LlamaConfig,
    embeddings: Embeddings,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: Dense,
}

/// Which of a sequence's logits a step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsWanted {
    /// Every token's logit.
    #[default]
    All,
    /// None: the step only fills the cache (a prompt chunk before the prompt's last). Where no
    /// sequence of the step wants logits, the output layer, for a small model a large share of
    /// a chunk's weights (Gemma 3 270M's is 178 MB of 246), is skipped; the sequence's row of
    /// logits holds unspecified values.
    Nothing,
}

/// One sequence's part of a batched step: the tokens it appends and its cache.
pub struct SequenceStep<'a> {
    /// Tokens to append (one when decoding, a chunk when prefilling).
    pub tokens: &'a [u32],
    /// The sequence's cache.
    pub cache: &'a mut KvCache,
    /// The logits the step computes for it.
    pub wanted: LogitsWanted,
}

impl<'a> SequenceStep<'a> {
    /// A step that appends `tokens` to `cache` and computes every logit after them.
    pub fn new(tokens: &'a [u32], cache: &'a mut KvCache) -> Self {
        Self {
            tokens,
            cache,
            wanted: LogitsWanted::All,
        }
    }
}

impl LlamaModel {
    /// Builds the model from a GGUF file, checking every tensor's shape.
    pub fn load(f: &GgufFile) -> Result<Self> {
        Self::build(LlamaConfig::from_gguf(f)?, Weights::Gguf(f))
    }

    /// Builds the model from a Hugging Face directory: `config.json` and `model.safetensors`
    /// (or `pytorch_model.bin`), weights in `f32`/`f16`/`bf16`.
    pub fn load_hf(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::weights(&config_path, format!("invalid JSON: {e}")))?;
        let c = LlamaConfig::from_hf_config(&config_path, &json)?;
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::weights(dir, "no model.safetensors or pytorch_model.bin (sharded checkpoints are not supported yet)")
            })?;
        let map = TensorMap::load(&weights)?;
        Self::build(c, Weights::Hf(&map))
    }

    fn build(c: LlamaConfig, f: Weights<'_>) -> Result<Self> {
        let (h, q_w, kv_w) = (c.hidden, c.q_width(), c.kv_width());
        let mut blocks = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let t = |s: &str| format!("blk.{l}.{s}.weight");
            // Qwen 2 always has them; a Qwen 3 checkpoint made with `attention_bias` too.
            let biased = c.family == Family::Qwen2
                || (c.family == Family::Qwen3 && f.has(&format!("blk.{l}.attn_q.bias")));
            let qkv_bias = if biased {
                let b = |s: &str, n: usize| f.f32(&format!("blk.{l}.{s}.bias"), &[n]);
                let mut bias = b("attn_q", q_w)?;
                bias.extend(b("attn_k", kv_w)?);
                bias.extend(b("attn_v", kv_w)?);
                Some(bias)
            } else {
                None
            };
            let head_norms = match c.family {
                Family::Gemma3 | Family::Qwen3 => Some(HeadNorms {
                    q: f.f32(&t("attn_q_norm"), &[c.head_dim])?,
                    k: f.f32(&t("attn_k_norm"), &[c.head_dim])?,
                }),
                _ => None,
            };
            let post_norms = match c.family {
                Family::Gemma3 => Some(PostNorms {
                    attn: f.f32(&t("post_attention_norm"), &[h])?,
                    ffn: f.f32(&t("post_ffw_norm"), &[h])?,
                }),
                _ => None,
            };
            blocks.push(Block {
                attn_norm: f.f32(&t("attn_norm"), &[h])?,
                qkv: f.dense(
                    &[t("attn_q"), t("attn_k"), t("attn_v")],
                    &[q_w, kv_w, kv_w],
                    h,
                )?,
                qkv_bias,
                attn_output: f.dense(&[t("attn_output")], &[h], q_w)?,
                ffn_norm: f.f32(&t("ffn_norm"), &[h])?,
                gate_up: f.dense(&[t("ffn_gate"), t("ffn_up")], &[c.ffn, c.ffn], h)?,
                down: f.dense(&[t("ffn_down")], &[h], c.ffn)?,
                head_norms,
                post_norms,
            });
        }
        // Models with tied embeddings have no separate output matrix.
        let tied = !f.has("output.weight");
        let output_name = if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let output = f.dense(&[output_name.to_string()], &[c.vocab_size], h)?;
        // A tied, quantized output matrix doubles as the embedding table: rows are dequantized
        // on lookup exactly as a separate table would hold them, without a second copy.
        let embeddings = if tied && matches!(output, Dense::Quant(_)) {
            Embeddings::TiedOutput
        } else {
            Embeddings::Table(f.f32("token_embd.weight", &[c.vocab_size, h])?)
        };
        Ok(Self {
            output_norm: f.f32("output_norm.weight", &[h])?,
            embeddings,
            blocks,
            output,
            config: c,
        })
    }

    /// The configuration read from the file.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Longest sequence (prompt plus generated tokens) this model instance accepts.
    pub fn max_positions(&self) -> usize {
        self.config.context_length
    }

    /// An empty cache for one sequence of at most `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let capacity = capacity.min(self.max_positions());
        // A cache rounded to f16 anyway is stored in f16 where the kernels read it fast.
        let f16 = self.config.f16_kv && f16_cache_pays(self.config.head_dim);
        KvCache::new(self.config.layers, capacity, f16)
    }

    /// Appends `tokens` to the sequence in `cache` and returns the logits after its last token.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.forward_batch(&mut [SequenceStep::new(tokens, cache)])
    }

    /// Writes the embedding of token `t` into `out`.
    fn embed(&self, t: u32, out: &mut [f32]) {
        let h = self.config.hidden;
        match (&self.embeddings, &self.output) {
            (Embeddings::Table(table), _) => {
                out.copy_from_slice(&table[t as usize * h..(t as usize + 1) * h])
            }
            (Embeddings::TiedOutput, Dense::Quant(parts)) => {
                parts[0].dequantize_row(t as usize, out)
            }
            (Embeddings::TiedOutput, Dense::F32(_)) => {
                unreachable!("tied lookups are only used with a quantized output")
            }
        }
        if self.config.family == Family::Gemma3 {
            let scale = (h as f32).sqrt();
            for v in out.iter_mut() {
                *v *= scale;
            }
        }
    }

    /// Runs one step for several sequences at once: each appends its tokens (one for decoding,
    /// several for a prefill chunk) to its own cache. Dense layers see all rows together;
    /// attention stays within each sequence. Returns the logits after each sequence's last token
    /// (those its step [`SequenceStep::wanted`]), one row of `vocab_size` per sequence, in one
    /// buffer (no copy per sequence: a vocabulary can be 262,144 wide).
    pub fn forward_batch(&self, steps: &mut [SequenceStep<'_>]) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.forward_batch_into(steps, &mut logits)?;
        Ok(logits)
    }

    /// [`Self::forward_batch`] into `logits`, which is resized to one row per sequence: a
    /// caller that keeps the buffer from step to step spares the allocation and its page
    /// faults (a batch's logits are megabytes). On an error `logits` is left as it was.
    pub fn forward_batch_into(
        &self,
        steps: &mut [SequenceStep<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.config;
        for s in steps.iter() {
            if s.tokens.is_empty() {
                return Err(Error::Tokenizer("no tokens to run".into()));
            }
            if s.cache.layers() != c.layers || (s.cache.is_f16() && !c.f16_kv) {
                return Err(Error::Unsupported(
                    "a KV cache made by another model (new_cache makes one for this model)".into(),
                ));
            }
            if s.cache.len() + s.tokens.len() > s.cache.capacity() {
                return Err(Error::InputTooLong {
                    index: 0,
                    tokens: s.cache.len() + s.tokens.len(),
                    max: s.cache.capacity(),
                });
            }
            if let Some(bad) = s.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(Error::Tokenizer(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab_size
                )));
            }
        }
        let (h, q_w, kv_w) = (c.hidden, c.q_width(), c.kv_width());
        let rows: usize = steps.iter().map(|s| s.tokens.len()).sum();
        let w = q_w + 2 * kv_w;
        let mut buffers = StepBuffers::take();
        let StepBuffers {
            x,
            normed,
            qkv,
            attn,
            proj,
            gate_up,
            act,
        } = &mut buffers;
        let x = sized(x, rows * h);
        let mut positions = Vec::with_capacity(rows);
        let mut r = 0;
        for s in steps.iter() {
            for (i, &t) in s.tokens.iter().enumerate() {
                self.embed(t, &mut x[r * h..(r + 1) * h]);
                positions.push(s.cache.len() + i);
                r += 1;
            }
        }
        let global_rope = Rope::new(c, c.rope_base, c.rope_scale, &positions);
        let local_rope = c
            .sliding_window
            .map(|(_, base)| Rope::new(c, base, 1.0, &positions));
        // Gemma 3 scales queries by 1/√head_dim before attention; the others scale the scores.
        let (q_scale, score_scale) = match c.family {
            Family::Gemma3 => (1.0 / (c.head_dim as f32).sqrt(), 1.0),
            _ => (1.0, 1.0 / (c.head_dim as f32).sqrt()),
        };
        let normed = sized(normed, rows * h);
        let qkv = sized(qkv, rows * w);
        let attn = sized(attn, rows * q_w);
        let proj = sized(proj, rows * h);
        let gate_up = sized(gate_up, rows * 2 * c.ffn);
        let act = sized(act, rows * c.ffn);
        for (l, b) in self.blocks.iter().enumerate() {
            rms_norm(x, &b.attn_norm, c.rms_eps, normed);
            b.qkv.forward(normed, rows, qkv);
            if let Some(bias) = &b.qkv_bias {
                for row in qkv.chunks_exact_mut(w) {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
            }
            let window = c.window_of(l);
            let rope = match (window, &local_rope) {
                (Some(_), Some(local)) => local,
                _ => &global_rope,
            };
            // Row by row (on the kernel threads for a prompt chunk or a large batch).
            for_each_row_mut(qkv, w, |r, row| {
                let (qk, _) = row.split_at_mut(q_w + kv_w);
                if let Some(n) = &b.head_norms {
                    let (q, k) = qk.split_at_mut(q_w);
                    rms_norm_in_place(q, &n.q, c.rms_eps);
                    rms_norm_in_place(k, &n.k, c.rms_eps);
                }
                rope.apply(qk, r);
                if q_scale != 1.0 {
                    for v in &mut qk[..q_w] {
                        *v *= q_scale;
                    }
                }
                // llama.cpp keeps the KV cache (and the query it meets) in f16.
                if c.f16_kv {
                    round_to_f16_slice(row);
                }
            });
            // Each sequence's new keys and values join its cache, then every sequence attends
            // over its own cache (the sequences side by side on the kernel threads).
            let mut row0 = 0;
            for s in steps.iter_mut() {
                let n = s.tokens.len();
                for row in qkv[row0 * w..(row0 + n) * w].chunks_exact(w) {
                    s.cache.push(l, &row[q_w..q_w + kv_w], &row[q_w + kv_w..]);
                }
                row0 += n;
            }
            let shape = CausalShape {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                window,
                scale: score_scale,
                // llama.cpp multiplies the f16 values by f16-rounded probabilities.
                f16_probs: c.f16_kv,
            };
            let mut jobs = Vec::with_capacity(steps.len());
            let (mut row0, mut rest) = (0, &mut attn[..]);
            for s in steps.iter() {
                let n = s.tokens.len();
                let (out, tail) = std::mem::take(&mut rest).split_at_mut(n * q_w);
                rest = tail;
                jobs.push(CausalJob {
                    queries: &qkv[row0 * w..(row0 + n) * w],
                    q_stride: w,
                    cache: s.cache.view(l),
                    start: s.cache.len(),
                    out,
                });
                row0 += n;
            }
            causal_cached_many(&shape, &mut jobs);
            drop(jobs);
            b.attn_output.forward(attn, rows, proj);
            if let Some(n) = &b.post_norms {
                for_each_row_mut(proj, h, |_, row| rms_norm_in_place(row, &n.attn, c.rms_eps));
            }
            for (xv, p) in x.iter_mut().zip(proj.iter()) {
                *xv += p;
            }
            rms_norm(x, &b.ffn_norm, c.rms_eps, normed);
            b.gate_up.forward(normed, rows, gate_up);
            // The gated activation, row by row (on the kernel threads for a batch).
            kiln_kernels::parallel::map_rows(act, c.ffn, gate_up, 2 * c.ffn, |a, gu| {
                let (g, u) = gu.split_at(c.ffn);
                match c.family {
                    Family::Gemma3 => gelu_like_ggml_times(g, u, a),
                    // ggml's own `exp` (a native llama.cpp build's on this CPU): another
                    // vectorized `exp`, 2e-7 from the true value but with other bits, flipped a
                    // near-tie greedy token of SmolLM2 (2026-12-02).
                    _ => swiglu(g, u, a),
                }
            });
            b.down.forward(act, rows, proj);
            if let Some(n) = &b.post_norms {
                for_each_row_mut(proj, h, |_, row| rms_norm_in_place(row, &n.ffn, c.rms_eps));
            }
            for (xv, p) in x.iter_mut().zip(proj.iter()) {
                *xv += p;
            }
        }
        // Only each sequence's last row needs logits.
        let mut last_rows = Vec::with_capacity(steps.len() * h);
        let mut row_end = 0;
        for s in steps.iter_mut() {
            s.cache.advance(s.tokens.len());
            row_end += s.tokens.len();
            last_rows.extend_from_slice(&x[(row_end - 1) * h..row_end * h]);
        }
        logits.resize(steps.len() * c.vocab_size, 0.0);
        // The output layer runs where any sequence wants logits (not for a lone prompt's chunks
        // before its last), and then for every row: the matrix is streamed once for all of
        // them, so a few more rows cost little, and gathering the wanted rows would copy a
        // megabyte of logits per row at every step (Gemma 3's vocabulary is 262,144 wide).
        if steps.iter().any(|s| s.wanted == LogitsWanted::All) {
            let mut normed_last = vec![0.0f32; last_rows.len()];
            rms_norm(&last_rows, &self.output_norm, c.rms_eps, &mut normed_last);
            // Every value is overwritten by the output layer.
            self.output.forward(&normed_last, steps.len(), logits);
        }
        buffers.keep();
        Ok(())
    }
}

/// A step's working rows, kept on its thread for the next step while they are small (a
/// decoding batch's): allocated afresh at every step, they came from freshly faulted pages
/// (perf, SmolLM2 at 8 streams over HTTP: about 2% of the step's thread's samples).
#[derive(Default)]
struct StepBuffers {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

/// Most values [`StepBuffers`] keeps between steps (1 MiB): a decoding batch's rows, not a
/// prompt chunk's, so that an idle server does not hold a prompt's working memory.
const KEPT_STEP_VALUES: usize = 1 << 18;

thread_local! {
    static STEP_BUFFERS: std::cell::RefCell<StepBuffers> = std::cell::RefCell::default();
}

impl StepBuffers {
    /// This thread's kept buffers (empty ones if none).
    fn take() -> Self {
        STEP_BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()))
    }

    /// Keeps the buffers for this thread's next step if they are small enough.
    fn keep(self) {
        let values: usize = [
            &self.x,
            &self.normed,
            &self.qkv,
            &self.attn,
            &self.proj,
            &self.gate_up,
            &self.act,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum();
        if values <= KEPT_STEP_VALUES {
            STEP_BUFFERS.with(|b| *b.borrow_mut() = self);
        }
    }
}

/// `v` as `len` values (zeros where it grows; a step overwrites every value it reads).
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    v
}

/// The rotation angles of a step's rows for one RoPE base, computed as ggml does: `θ` starts
/// at the position and is multiplied by `base^(-2/d)` in `f32` for each successive pair.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    head_dim: usize,
    neox: bool,
}

impl Rope {
    fn new(c: &LlamaConfig, base: f32, scale: f32, positions: &[usize]) -> Self {
        let half = c.head_dim / 2;
        let theta_scale = base.powf(-2.0 / c.head_dim as f32);
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let mut theta = p as f32;
            for _ in 0..half {
                let angle = scale * theta;
                cos.push(angle.cos());
                sin.push(angle.sin());
                theta *= theta_scale;
            }
        }
        Self {
            cos,
            sin,
            half,
            head_dim: c.head_dim,
            neox: c.rope_neox,
        }
    }

    /// Rotates every head of `x` (query and key heads of row `r`, side by side).
    fn apply(&self, x: &mut [f32], r: usize) {
        let cos = &self.cos[r * self.half..(r + 1) * self.half];
        let sin = &self.sin[r * self.half..(r + 1) * self.half];
        for head in x.chunks_exact_mut(self.head_dim) {
            if self.neox {
                let (a, b) = head.split_at_mut(self.half);
                for i in 0..self.half {
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * cos[i] - x1 * sin[i];
                    b[i] = x0 * sin[i] + x1 * cos[i];
                }
            } else {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (x0, x1) = (pair[0], pair[1]);
                    pair[0] = x0 * cos[i] - x1 * sin[i];
                    pair[1] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }
}

/// `out = GELU(g) · u`, GELU (tanh form) as ggml computes it on the CPU: the input rounded to
/// `f16` (256 values at a time, vectorized), looked up in a table of `f16` results; exactly 0
/// below -10 and the identity above 10.
fn gelu_like_ggml_times(g: &[f32], u: &[f32], out: &mut [f32]) {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=u16::MAX).map(|h| gelu_f16(half_to_f32(h))).collect());
    const PIECE: usize = 256;
    let mut buffer = [0u16; PIECE];
    for ((g, u), out) in g
        .chunks(PIECE)
        .zip(u.chunks(PIECE))
        .zip(out.chunks_mut(PIECE))
    {
        let halves = &mut buffer[..g.len()];
        f32_to_half_slice(g, halves);
        for (((o, &x), &u), &h) in out.iter_mut().zip(g).zip(u).zip(halves.iter()) {
            let gelu = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                table[h as usize]
            };
            *o = gelu * u;
        }
    }
}

/// `f16(gelu_tanh(x))` of an `f16` value `x`: one entry of ggml's table.
fn gelu_f16(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    round_to_f16(0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh()))
}
