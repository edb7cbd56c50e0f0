//! The files a served model was loaded from, offered for download (the browser playground
//! fetches them to run the model in WebAssembly).
//!
//! Only files on an explicit list are served, by exact name: a request can never name a path.

use std::path::{Path, PathBuf};

/// Files of a sentence-transformers directory that loading an embedding model reads.
const EMBEDDING_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// One downloadable file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// The name clients use (relative, `/`-separated).
    pub name: String,
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its size in bytes when the server started.
    pub size: u64,
}

/// The downloadable files of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFiles {
    files: Vec<ModelFile>,
}

impl ModelFiles {
    /// The files of an embedding model directory that exist among those its loader reads.
    pub fn embedding_dir(dir: &Path) -> Self {
        let files = EMBEDDING_FILES
            .iter()
            .filter_map(|name| file_entry(name, dir.join(name)))
            .collect();
        Self { files }
    }

    /// A single-file model (a `.gguf`), served under its file name.
    pub fn single(path: &Path) -> Self {
        let files = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|name| file_entry(name, path.to_path_buf()))
            .into_iter()
            .collect();
        Self { files }
    }

    /// The files, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &ModelFile> {
        self.files.iter()
    }

    /// The file called exactly `name`, if it is one of this model's.
    pub fn get(&self, name: &str) -> Option<&ModelFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

fn file_entry(name: &str, path: PathBuf) -> Option<ModelFile> {
    let meta = std::fs::metadata(&path).ok()?;
    meta.is_file().then(|| ModelFile {
        name: name.to_string(),
        path,
        size: meta.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_known_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(dir.path().join("1_Pooling/config.json"), "{}").unwrap();
        let files = ModelFiles::embedding_dir(dir.path());
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["config.json", "1_Pooling/config.json"]);
        assert!(files.get("secret.txt").is_none());
        assert!(files.get("../config.json").is_none());
        assert_eq!(files.get("config.json").unwrap().size, 2);
    }

    #[test]
    fn single_file_is_named_by_its_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"GGUF").unwrap();
        let files = ModelFiles::single(&path);
        assert_eq!(files.get("m.gguf").unwrap().path, path);
        assert!(ModelFiles::single(&dir.path().join("absent.gguf"))
            .iter()
            .next()
            .is_none());
    }
}
