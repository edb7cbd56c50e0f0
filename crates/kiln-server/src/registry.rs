//! The models one server process serves, by name: embedding models and chat models.

use crate::model_files::ModelFiles;
use kiln_engine::{EmbeddingEngine, GenerationEngine};
use std::sync::Arc;

/// The engine behind a served model.
#[derive(Clone)]
pub enum Engine {
    /// A sentence-embedding model.
    Embedding(Arc<EmbeddingEngine>),
    /// A text-generation (chat) model.
    Generation(Arc<GenerationEngine>),
}

impl Engine {
    fn name(&self) -> &str {
        match self {
            Engine::Embedding(e) => e.name(),
            Engine::Generation(g) => g.name(),
        }
    }

    /// `embedding` or `chat`, for listings and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Engine::Embedding(_) => "embedding",
            Engine::Generation(_) => "chat",
        }
    }
}

/// A loaded model with the time it became available.
pub struct ServedModel {
    /// The engine that runs it.
    pub engine: Engine,
    /// Unix time it was loaded.
    pub created: u64,
    /// The files it was loaded from that clients may download (empty unless attached).
    pub files: ModelFiles,
}

impl ServedModel {
    /// The served name.
    pub fn name(&self) -> &str {
        self.engine.name()
    }
}

/// The served models, in the order they were given.
#[derive(Default)]
pub struct ModelRegistry {
    models: Vec<ServedModel>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, engine: Engine) -> Result<(), String> {
        if self.models.iter().any(|m| m.name() == engine.name()) {
            return Err(format!(
                "two models are named `{}`; rename one with NAME=... in --model",
                engine.name()
            ));
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.models.push(ServedModel {
            engine,
            created,
            files: ModelFiles::default(),
        });
        Ok(())
    }

    /// Adds an embedding model; a second model of the same name is an error.
    pub fn add(&mut self, engine: EmbeddingEngine) -> Result<(), String> {
        self.push(Engine::Embedding(Arc::new(engine)))
    }

    /// Adds a chat model; a second model of the same name is an error.
    pub fn add_generation(&mut self, engine: GenerationEngine) -> Result<(), String> {
        self.push(Engine::Generation(Arc::new(engine)))
    }

    /// Offers the files of the model named `name` for download; false if no such model.
    pub fn attach_files(&mut self, name: &str, files: ModelFiles) -> bool {
        match self.models.iter_mut().find(|m| m.name() == name) {
            Some(m) => {
                m.files = files;
                true
            }
            None => false,
        }
    }

    /// The served model named `name`, with its metadata.
    pub fn served(&self, name: &str) -> Option<&ServedModel> {
        self.models.iter().find(|m| m.name() == name)
    }

    /// The model named `name`, of any kind.
    pub fn find(&self, name: &str) -> Option<&Engine> {
        self.models
            .iter()
            .find(|m| m.name() == name)
            .map(|m| &m.engine)
    }

    /// The embedding model named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<EmbeddingEngine>> {
        match self.find(name) {
            Some(Engine::Embedding(e)) => Some(e),
            _ => None,
        }
    }

    /// The chat model named `name`.
    pub fn get_generation(&self, name: &str) -> Option<&Arc<GenerationEngine>> {
        match self.find(name) {
            Some(Engine::Generation(g)) => Some(g),
            _ => None,
        }
    }

    /// The first embedding model.
    pub fn default_model(&self) -> Option<&Arc<EmbeddingEngine>> {
        self.models.iter().find_map(|m| match &m.engine {
            Engine::Embedding(e) => Some(e),
            Engine::Generation(_) => None,
        })
    }

    /// All served models.
    pub fn iter(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.iter()
    }

    /// Names of all served models.
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name().to_string()).collect()
    }
}
