//! Reading a sentence-transformers model directory: `modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`. Pooling and normalization come from these files.

use crate::error::{Error, Result};
use crate::pooling::PoolingMode;
use serde::Deserialize;
use std::path::{Path, PathBuf};

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

/// Where the pipeline's files come from: a directory on disk, or files held in memory.
enum Source<'a> {
    Dir(&'a Path),
    Memory(&'a dyn Fn(&str) -> Option<&'a [u8]>),
}

impl Source<'_> {
    /// The path that labels `name` in errors.
    fn path(&self, name: &str) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(name),
            Source::Memory(_) => PathBuf::from(name),
        }
    }

    /// Whether the model has the file `name` (a path relative to the model directory).
    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => dir.join(name).exists(),
            Source::Memory(get) => get(name).is_some(),
        }
    }

    /// Parses the JSON file `name`.
    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.path(name);
        let bytes = match self {
            Source::Dir(_) => std::fs::read(&path).map_err(|e| Error::io(&path, e))?,
            Source::Memory(get) => get(name)
                .ok_or_else(|| {
                    Error::io(
                        &path,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "file not given"),
                    )
                })?
                .to_vec(),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::config(&path, e.to_string()))
    }

    /// The model directory, for error messages.
    fn dir(&self) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.to_path_buf(),
            Source::Memory(_) => PathBuf::from("(files in memory)"),
        }
    }
}

impl SentencePipeline {
    /// Reads the pipeline of the model in `dir`.
    ///
    /// Without `modules.json` the directory is a plain Hugging Face model; then `fallback`
    /// pooling must be given (normalization off), since guessing would silently change results.
    pub fn read(dir: &Path, fallback: Option<PoolingMode>) -> Result<Self> {
        Self::from_source(&Source::Dir(dir), fallback)
    }

    /// Like [`Self::read`], with the files in memory: `file("modules.json")`,
    /// `file("1_Pooling/config.json")`, ... return a file's bytes, or `None` when the model has
    /// no such file.
    pub fn from_files<'a>(
        file: &'a dyn Fn(&str) -> Option<&'a [u8]>,
        fallback: Option<PoolingMode>,
    ) -> Result<Self> {
        Self::from_source(&Source::Memory(file), fallback)
    }

    fn from_source(src: &Source<'_>, fallback: Option<PoolingMode>) -> Result<Self> {
        let (max_seq_length, lowercase) = {
            let name = "sentence_bert_config.json";
            if src.exists(name) {
                let c: SentenceBertConfig = src.json(name)?;
                (c.max_seq_length, c.do_lower_case)
            } else {
                (None, false)
            }
        };
        let modules_path = src.path("modules.json");
        if !src.exists("modules.json") {
            let pooling = fallback.ok_or_else(|| Error::MissingFile {
                dir: src.dir(),
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
        let modules: Vec<ModuleEntry> = src.json("modules.json")?;
        let mut pooling = None;
        let mut normalize = false;
        let mut saw_transformer = false;
        for m in &modules {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            match kind {
                "Transformer" => saw_transformer = true,
                "Pooling" => pooling = Some(read_pooling(src, &m.path, &modules_path)?),
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

fn read_pooling(src: &Source<'_>, module: &str, modules_path: &Path) -> Result<Vec<PoolingMode>> {
    let name = if module.is_empty() {
        "config.json".to_string()
    } else {
        format!("{}/config.json", module.trim_end_matches('/'))
    };
    let path = src.path(&name);
    if !src.exists(&name) {
        return Err(Error::MissingFile {
            dir: src.path(module),
            file: "config.json".into(),
            hint: format!("{} lists a Pooling module here", modules_path.display()),
        });
    }
    let c: PoolingConfig = src.json(&name)?;
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
