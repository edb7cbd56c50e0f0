//! Reading a sentence-transformers model directory: `modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`. Pooling and normalization come from these files.

use crate::error::{Error, Result};
use crate::pooling::PoolingMode;
use serde::Deserialize;
use std::path::Path;

/// What the sentence-transformers files of a model directory say about its pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePipeline {
    /// Pooling modes, concatenated in this order.
    pub pooling: Vec<PoolingMode>,
    /// Whether a `Normalize` module follows pooling.
    pub normalize: bool,
    /// `max_seq_length`, if `sentence_bert_config.json` sets one.
    pub max_seq_length: Option<usize>,
    /// `do_lower_case` from `sentence_bert_config.json`.
    pub lowercase: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default)]
    include_prompt: Option<bool>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::config(path, e.to_string()))
}

impl SentencePipeline {
    /// Reads the pipeline of the model in `dir`.
    ///
    /// Without `modules.json` the directory is a plain Hugging Face model; then `fallback`
    /// pooling must be given (normalization off), since guessing would silently change results.
    pub fn read(dir: &Path, fallback: Option<PoolingMode>) -> Result<Self> {
        let (max_seq_length, lowercase) = {
            let p = dir.join("sentence_bert_config.json");
            if p.exists() {
                let c: SentenceBertConfig = read_json(&p)?;
                (c.max_seq_length, c.do_lower_case)
            } else {
                (None, false)
            }
        };
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            let pooling = fallback.ok_or_else(|| Error::MissingFile {
                dir: dir.to_path_buf(),
                file: "modules.json".into(),
                hint: "this is not a sentence-transformers model; choose a pooling mode explicitly (--pooling mean|cls|max)".into(),
            })?;
            return Ok(Self {
                pooling: vec![pooling],
                normalize: false,
                max_seq_length,
                lowercase,
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let mut pooling = None;
        let mut normalize = false;
        let mut saw_transformer = false;
        for m in &modules {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            match kind {
                "Transformer" => saw_transformer = true,
                "Pooling" => pooling = Some(read_pooling(&dir.join(&m.path), &modules_path)?),
                "Normalize" => normalize = true,
                other => {
                    return Err(Error::Unsupported(format!(
                        "{}: module `{other}` (kiln supports Transformer, Pooling and Normalize)",
                        modules_path.display()
                    )))
                }
            }
        }
        if !saw_transformer {
            return Err(Error::config(&modules_path, "no Transformer module"));
        }
        let pooling = match (pooling, fallback) {
            (Some(p), None) => p,
            (_, Some(f)) => vec![f],
            (None, None) => {
                return Err(Error::config(
                    &modules_path,
                    "no Pooling module; choose a pooling mode explicitly (--pooling)",
                ))
            }
        };
        Ok(Self {
            pooling,
            normalize,
            max_seq_length,
            lowercase,
        })
    }
}

fn read_pooling(dir: &Path, modules_path: &Path) -> Result<Vec<PoolingMode>> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
            hint: format!("{} lists a Pooling module here", modules_path.display()),
        });
    }
    let c: PoolingConfig = read_json(&path)?;
    if c.pooling_mode_weightedmean_tokens {
        return Err(Error::Unsupported(format!(
            "{}: weighted-mean pooling",
            path.display()
        )));
    }
    if c.include_prompt == Some(false) {
        return Err(Error::Unsupported(format!(
            "{}: include_prompt = false",
            path.display()
        )));
    }
    // sentence-transformers concatenates the enabled modes in this order.
    let modes: Vec<PoolingMode> = [
        (c.pooling_mode_cls_token, PoolingMode::Cls),
        (c.pooling_mode_max_tokens, PoolingMode::Max),
        (c.pooling_mode_mean_tokens, PoolingMode::Mean),
        (
            c.pooling_mode_mean_sqrt_len_tokens,
            PoolingMode::MeanSqrtLen,
        ),
        (c.pooling_mode_lasttoken, PoolingMode::LastToken),
    ]
    .into_iter()
    .filter_map(|(on, m)| on.then_some(m))
    .collect();
    if modes.is_empty() {
        return Err(Error::config(&path, "no pooling mode is enabled"));
    }
    Ok(modes)
}
