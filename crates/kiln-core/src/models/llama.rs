//! The Llama decoder family (llama, SmolLM2, ...) as GGUF files describe it: RMSNorm, rotary
//! positions on consecutive pairs (ggml's "normal" RoPE, which GGUF converters arrange the
//! weights for), grouped-query causal attention with a KV cache, and a SwiGLU feed-forward.

use crate::error::{Error, Result};
use crate::weights::ggml::GgmlType;
use crate::weights::gguf::{GgufFile, MetaValue};
use kiln_kernels::linear::Linear;
use kiln_kernels::quant::{round_to_f16, QuantFormat, QuantLinear};

/// A dense layer: ggml-quantized weights computed like llama.cpp, or `f32` weights.
enum Dense {
    F32(Linear),
    Quant(QuantLinear),
}

impl Dense {
    /// Loads and stacks (along the output) the weights `names` of shapes `[outs[i], inp]`.
    fn load(f: &GgufFile, names: &[String], outs: &[usize], inp: usize) -> Result<Self> {
        let mut types = Vec::new();
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
            types.push(info.ggml_type);
        }
        let format = match types.as_slice() {
            [t, rest @ ..] if rest.iter().all(|r| r == t) => match t {
                GgmlType::Q4_1 => Some(QuantFormat::Q4_1),
                GgmlType::Q8_0 => Some(QuantFormat::Q8_0),
                _ => None,
            },
            _ => None,
        };
        let total: usize = outs.iter().sum();
        if let Some(format) = format.filter(|_| inp.is_multiple_of(32)) {
            let mut data = Vec::new();
            for name in names {
                let info = f.tensor(name).expect("checked above");
                data.extend_from_slice(f.tensor_bytes(info));
            }
            return Ok(Dense::Quant(QuantLinear::new(format, data, total, inp)));
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
            Dense::Quant(q) => q.forward(x, rows, out),
        }
    }
}

/// Hyper-parameters read from a GGUF file's `<arch>.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Architecture name (`general.architecture`).
    pub arch: String,
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
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
}

fn meta_usize(f: &GgufFile, key: &str) -> Result<usize> {
    f.meta(key)
        .and_then(MetaValue::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0 && v < 1 << 24)
        .ok_or_else(|| Error::weights(f.path(), format!("metadata `{key}` is missing or invalid")))
}

impl LlamaConfig {
    /// Reads the configuration of a `llama`-architecture GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| Error::weights(f.path(), "metadata `general.architecture` is missing"))?
            .to_string();
        if arch != "llama" {
            return Err(Error::Unsupported(format!(
                "{}: architecture `{arch}` (kiln's decoder supports `llama`)",
                f.path().display()
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = meta_usize(f, &k("embedding_length"))?;
        let heads = meta_usize(f, &k("attention.head_count"))?;
        let kv_heads = meta_usize(f, &k("attention.head_count_kv")).unwrap_or(heads);
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(Error::weights(
                f.path(),
                format!("{hidden} hidden, {heads} heads and {kv_heads} KV heads do not divide"),
            ));
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
        let head_dim = hidden / heads;
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
        Ok(Self {
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
            context_length: meta_usize(f, &k("context_length"))?,
            arch,
        })
    }
}

struct Block {
    attn_norm: Vec<f32>,
    qkv: Dense,
    attn_output: Dense,
    ffn_norm: Vec<f32>,
    gate_up: Dense,
    down: Dense,
}

/// A loaded Llama-family decoder (weights dequantized to `f32` at load).
pub struct LlamaModel {
    config: LlamaConfig,
    embeddings: Vec<f32>,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: Dense,
    /// `cos`/`sin` of every position and frequency, `[context, head_dim / 2]`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

/// One sequence's part of a batched step: the tokens it appends and its cache.
pub struct SequenceStep<'a> {
    /// Tokens to append (one when decoding, a chunk when prefilling).
    pub tokens: &'a [u32],
    /// The sequence's cache.
    pub cache: &'a mut KvCache,
}

/// Keys and values of past positions of one sequence, per layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
        for k in &mut self.keys {
            k.clear();
        }
        for v in &mut self.values {
            v.clear();
        }
    }

    /// Bytes held by the cached keys and values.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * 4)
            .sum()
    }
}

impl LlamaModel {
    /// Builds the model from a GGUF file, checking every tensor's shape.
    pub fn load(f: &GgufFile) -> Result<Self> {
        let c = LlamaConfig::from_gguf(f)?;
        let (h, kv) = (c.hidden, c.kv_heads * c.head_dim);
        let mut blocks = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let t = |s: &str| format!("blk.{l}.{s}.weight");
            blocks.push(Block {
                attn_norm: f.f32(&t("attn_norm"), &[h])?,
                qkv: Dense::load(f, &[t("attn_q"), t("attn_k"), t("attn_v")], &[h, kv, kv], h)?,
                attn_output: Dense::load(f, &[t("attn_output")], &[h], h)?,
                ffn_norm: f.f32(&t("ffn_norm"), &[h])?,
                gate_up: Dense::load(f, &[t("ffn_gate"), t("ffn_up")], &[c.ffn, c.ffn], h)?,
                down: Dense::load(f, &[t("ffn_down")], &[h], c.ffn)?,
            });
        }
        let embeddings = f.f32("token_embd.weight", &[c.vocab_size, h])?;
        // Models with tied embeddings have no separate output matrix.
        let output_name = if f.tensor("output.weight").is_some() {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output = Dense::load(f, &[output_name.to_string()], &[c.vocab_size], h)?;
        let half = c.head_dim / 2;
        let positions = c.context_length.min(1 << 17);
        let mut rope_cos = Vec::with_capacity(positions * half);
        let mut rope_sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for i in 0..half {
                let freq = (c.rope_base as f64).powf(-2.0 * i as f64 / c.head_dim as f64);
                let angle = p as f64 * freq;
                rope_cos.push(angle.cos() as f32);
                rope_sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            output_norm: f.f32("output_norm.weight", &[h])?,
            embeddings,
            blocks,
            output,
            rope_cos,
            rope_sin,
            config: c,
        })
    }

    /// The configuration read from the file.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Longest sequence (prompt plus generated tokens) this model instance accepts.
    pub fn max_positions(&self) -> usize {
        self.rope_cos.len() / (self.config.head_dim / 2)
    }

    /// An empty cache for one sequence of at most `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let capacity = capacity.min(self.max_positions());
        KvCache {
            keys: vec![Vec::new(); self.config.layers],
            values: vec![Vec::new(); self.config.layers],
            len: 0,
            capacity,
        }
    }

    /// Appends `tokens` to the sequence in `cache` and returns the logits after its last token.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        Ok(self
            .forward_batch(&mut [SequenceStep { tokens, cache }])?
            .remove(0))
    }

    /// Runs one step for several sequences at once: each appends its tokens (one for decoding,
    /// several for a prefill chunk) to its own cache. Dense layers see all rows together;
    /// attention stays within each sequence. Returns the logits after each sequence's last token.
    pub fn forward_batch(&self, steps: &mut [SequenceStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        for s in steps.iter() {
            if s.tokens.is_empty() {
                return Err(Error::Tokenizer("no tokens to run".into()));
            }
            if s.cache.len + s.tokens.len() > s.cache.capacity {
                return Err(Error::InputTooLong {
                    index: 0,
                    tokens: s.cache.len + s.tokens.len(),
                    max: s.cache.capacity,
                });
            }
            if let Some(bad) = s.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(Error::Tokenizer(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab_size
                )));
            }
        }
        let h = c.hidden;
        let rows: usize = steps.iter().map(|s| s.tokens.len()).sum();
        let kv_w = c.kv_heads * c.head_dim;
        let w = h + 2 * kv_w;
        let mut x = Vec::with_capacity(rows * h);
        for s in steps.iter() {
            for &t in s.tokens {
                x.extend_from_slice(&self.embeddings[t as usize * h..(t as usize + 1) * h]);
            }
        }
        let mut normed = vec![0.0f32; rows * h];
        let mut qkv = vec![0.0f32; rows * w];
        let mut attn = vec![0.0f32; rows * h];
        let mut proj = vec![0.0f32; rows * h];
        let mut gate_up = vec![0.0f32; rows * 2 * c.ffn];
        let mut act = vec![0.0f32; rows * c.ffn];
        for (l, b) in self.blocks.iter().enumerate() {
            rms_norm(&x, &b.attn_norm, c.rms_eps, &mut normed);
            b.qkv.forward(&normed, rows, &mut qkv);
            let mut row0 = 0;
            for s in steps.iter_mut() {
                let n = s.tokens.len();
                let start = s.cache.len;
                let seq_qkv = &mut qkv[row0 * w..(row0 + n) * w];
                for (r, row) in seq_qkv.chunks_exact_mut(w).enumerate() {
                    let (q, rest) = row.split_at_mut(h);
                    self.rope(q, start + r);
                    self.rope(&mut rest[..kv_w], start + r);
                    // llama.cpp keeps the KV cache (and the query it meets) in f16.
                    for v in row.iter_mut() {
                        *v = round_to_f16(*v);
                    }
                    let rest = &row[h..];
                    s.cache.keys[l].extend_from_slice(&rest[..kv_w]);
                    s.cache.values[l].extend_from_slice(&rest[kv_w..]);
                }
                causal_attention(
                    seq_qkv,
                    w,
                    &s.cache.keys[l],
                    &s.cache.values[l],
                    start,
                    c,
                    &mut attn[row0 * h..(row0 + n) * h],
                );
                row0 += n;
            }
            b.attn_output.forward(&attn, rows, &mut proj);
            for (xv, p) in x.iter_mut().zip(&proj) {
                *xv += p;
            }
            rms_norm(&x, &b.ffn_norm, c.rms_eps, &mut normed);
            b.gate_up.forward(&normed, rows, &mut gate_up);
            for (a, gu) in act
                .chunks_exact_mut(c.ffn)
                .zip(gate_up.chunks_exact(2 * c.ffn))
            {
                let (g, u) = gu.split_at(c.ffn);
                for ((a, &g), &u) in a.iter_mut().zip(g).zip(u) {
                    *a = g / (1.0 + (-g).exp()) * u;
                }
            }
            b.down.forward(&act, rows, &mut proj);
            for (xv, p) in x.iter_mut().zip(&proj) {
                *xv += p;
            }
        }
        // Only each sequence's last row needs logits.
        let mut last_rows = Vec::with_capacity(steps.len() * h);
        let mut row_end = 0;
        for s in steps.iter_mut() {
            s.cache.len += s.tokens.len();
            row_end += s.tokens.len();
            last_rows.extend_from_slice(&x[(row_end - 1) * h..row_end * h]);
        }
        let mut normed_last = vec![0.0f32; last_rows.len()];
        rms_norm(&last_rows, &self.output_norm, c.rms_eps, &mut normed_last);
        let mut logits = vec![0.0f32; steps.len() * c.vocab_size];
        self.output.forward(&normed_last, steps.len(), &mut logits);
        Ok(logits
            .chunks_exact(c.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Rotates each head of `x` (a row of heads) for position `pos`, on consecutive pairs.
    fn rope(&self, x: &mut [f32], pos: usize) {
        let half = self.config.head_dim / 2;
        let (cos, sin) = (
            &self.rope_cos[pos * half..(pos + 1) * half],
            &self.rope_sin[pos * half..(pos + 1) * half],
        );
        for head in x.chunks_exact_mut(self.config.head_dim) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[i] - b * sin[i];
                pair[1] = a * sin[i] + b * cos[i];
            }
        }
    }
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// Attention of the new rows (queries in `qkv`, row width `w`) over all cached positions.
fn causal_attention(
    qkv: &[f32],
    w: usize,
    keys: &[f32],
    values: &[f32],
    start: usize,
    c: &LlamaConfig,
    out: &mut [f32],
) {
    let (d, kv_w) = (c.head_dim, c.kv_heads * c.head_dim);
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = Vec::new();
    for (r, row) in qkv.chunks_exact(w).enumerate() {
        let visible = start + r + 1;
        for head in 0..c.heads {
            let kvh = head / group;
            let q = &row[head * d..(head + 1) * d];
            scores.clear();
            scores.extend((0..visible).map(|p| {
                let k = &keys[p * kv_w + kvh * d..p * kv_w + (kvh + 1) * d];
                q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[r * c.hidden + head * d..r * c.hidden + (head + 1) * d];
            o.fill(0.0);
            for (p, &s) in scores.iter().enumerate() {
                let v = &values[p * kv_w + kvh * d..p * kv_w + (kvh + 1) * d];
                // llama.cpp multiplies the f16 values by f16-rounded probabilities.
                let s = round_to_f16(s / sum);
                for (ov, vv) in o.iter_mut().zip(v) {
                    *ov += s * vv;
                }
            }
        }
    }
}
