//! A sentence-embedding model ready to run: tokenizer, encoder, pooling and normalization,
//! loaded from a sentence-transformers directory.

use crate::error::{Error, Result};
use crate::models::bert::{BertConfig, BertModel};
use crate::pooling::{l2_normalize, pool, PoolingMode};
use crate::st_layout::SentencePipeline;
use crate::tokenize::{TextTokenizer, Tokenized};
use crate::weights::TensorMap;
use std::path::{Path, PathBuf};

/// Choices a user may make when loading an embedding model.
#[derive(Debug, Clone, Default)]
pub struct EmbedderOptions {
    /// Pooling to use instead of (or in the absence of) `1_Pooling/config.json`.
    pub pooling: Option<PoolingMode>,
}

/// A loaded sentence-embedding model.
pub struct SentenceEmbedder {
    dir: PathBuf,
    tokenizer: TextTokenizer,
    model: BertModel,
    pipeline: SentencePipeline,
}

/// Weight files kiln looks for, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

fn require(dir: &Path, file: &str, hint: &str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            file: file.into(),
            hint: hint.into(),
        })
    }
}

impl SentenceEmbedder {
    /// Loads the model in `dir` (config.json, tokenizer.json, model.safetensors or pytorch_model.bin).
    pub fn load(dir: &Path, options: &EmbedderOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
            ));
        }
        let config = BertConfig::from_file(&require(
            dir,
            "config.json",
            "a Hugging Face model directory has one",
        )?)?;
        let tokenizer_path = require(
            dir,
            "tokenizer.json",
            "kiln needs the fast-tokenizer file; save it with tokenizer.save_pretrained()",
        )?;
        let pipeline = SentencePipeline::read(dir, options.pooling)?;
        let weights_path = WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::MissingFile {
                dir: dir.to_path_buf(),
                file: WEIGHT_FILES.join(" or "),
                hint: "no weights found".into(),
            })?;
        let weights = TensorMap::load(&weights_path)?;
        let model = BertModel::load(config, &weights)?;
        let max_len = pipeline
            .max_seq_length
            .unwrap_or(usize::MAX)
            .min(model.config().max_position_embeddings);
        let tokenizer = TextTokenizer::from_file(&tokenizer_path, max_len, pipeline.lowercase)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tokenizer,
            model,
            pipeline,
        })
    }

    /// Loads a model from its files held in memory: `file(name)` returns the bytes of the file
    /// `name` (a path inside the model directory: `config.json`, `tokenizer.json`,
    /// `model.safetensors` or `pytorch_model.bin`, and the sentence-transformers files
    /// `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json` when the model has
    /// them), or `None` when there is no such file. For targets without a filesystem (wasm).
    pub fn from_files<'a>(
        file: &'a dyn Fn(&str) -> Option<&'a [u8]>,
        options: &EmbedderOptions,
    ) -> Result<Self> {
        let dir = PathBuf::from("(files in memory)");
        let need = |name: &str, hint: &str| {
            file(name).ok_or_else(|| Error::MissingFile {
                dir: dir.clone(),
                file: name.into(),
                hint: hint.into(),
            })
        };
        let config = BertConfig::from_bytes(
            Path::new("config.json"),
            need("config.json", "a Hugging Face model directory has one")?,
        )?;
        let tokenizer_json = need(
            "tokenizer.json",
            "kiln needs the fast-tokenizer file; save it with tokenizer.save_pretrained()",
        )?;
        let pipeline = SentencePipeline::from_files(file, options.pooling)?;
        let (weights_name, weights_bytes) = WEIGHT_FILES
            .iter()
            .find_map(|&f| file(f).map(|b| (f, b)))
            .ok_or_else(|| Error::MissingFile {
                dir: dir.clone(),
                file: WEIGHT_FILES.join(" or "),
                hint: "no weights found".into(),
            })?;
        let weights = TensorMap::parse(Path::new(weights_name), weights_bytes)?;
        let model = BertModel::load(config, &weights)?;
        drop(weights);
        let max_len = pipeline
            .max_seq_length
            .unwrap_or(usize::MAX)
            .min(model.config().max_position_embeddings);
        let tokenizer = TextTokenizer::from_bytes(tokenizer_json, max_len, pipeline.lowercase)
            .map_err(|e| Error::config(Path::new("tokenizer.json"), e.to_string()))?;
        Ok(Self {
            dir,
            tokenizer,
            model,
            pipeline,
        })
    }

    /// The directory the model was loaded from (`(files in memory)` for [`Self::from_files`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Length of the vectors this model returns.
    pub fn dimension(&self) -> usize {
        self.model.hidden_size() * self.pipeline.pooling.len()
    }

    /// Maximum number of tokens per input, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_len()
    }

    /// Whether the model's own pipeline ends with L2 normalization.
    pub fn normalizes(&self) -> bool {
        self.pipeline.normalize
    }

    /// The pipeline read from the sentence-transformers files.
    pub fn pipeline(&self) -> &SentencePipeline {
        &self.pipeline
    }

    /// Tokenizes one input; see [`TextTokenizer::encode`].
    pub fn tokenize(&self, text: &str, truncate: bool) -> Result<Tokenized> {
        self.tokenizer.encode(text, truncate)
    }

    /// Embeds already tokenized inputs in one forward pass; `normalize` L2-normalizes each vector.
    pub fn embed_tokens(&self, batch: &[&[u32]], normalize: bool) -> Result<Vec<Vec<f32>>> {
        let states = self.model.forward(batch)?;
        let width = self.model.hidden_size();
        let mut out = Vec::with_capacity(batch.len());
        let mut start = 0;
        for seq in batch {
            let rows = &states[start * width..(start + seq.len()) * width];
            let mut v = pool(rows, width, &self.pipeline.pooling);
            if normalize {
                l2_normalize(&mut v);
            }
            out.push(v);
            start += seq.len();
        }
        Ok(out)
    }

    /// Tokenizes (truncating) and embeds `texts`, normalizing as the model's pipeline says.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tokens = texts
            .iter()
            .map(|t| self.tokenize(t, true).map(|t| t.ids))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
        self.embed_tokens(&refs, self.pipeline.normalize)
    }
}
