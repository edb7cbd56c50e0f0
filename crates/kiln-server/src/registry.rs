//! The models one server process serves, by name.

use kiln_engine::EmbeddingEngine;
use std::sync::Arc;

/// A loaded model with the time it became available.
pub struct ServedModel {
    /// The engine that runs it.
    pub engine: Arc<EmbeddingEngine>,
    /// Unix time it was loaded.
    pub created: u64,
}

/// The served models, in the order they were given; the first is the default.
#[derive(Default)]
pub struct ModelRegistry {
    models: Vec<ServedModel>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a model; a later model of the same name is an error.
    pub fn add(&mut self, engine: EmbeddingEngine) -> Result<(), String> {
        if self.get(engine.name()).is_some() {
            return Err(format!(
                "two models are named `{}`; rename one with --model-name",
                engine.name()
            ));
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.models.push(ServedModel {
            engine: Arc::new(engine),
            created,
        });
        Ok(())
    }

    /// The model named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<EmbeddingEngine>> {
        self.models
            .iter()
            .find(|m| m.engine.name() == name)
            .map(|m| &m.engine)
    }

    /// The first model.
    pub fn default_model(&self) -> Option<&Arc<EmbeddingEngine>> {
        self.models.first().map(|m| &m.engine)
    }

    /// All served models.
    pub fn iter(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.iter()
    }

    /// Names of all served models.
    pub fn names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| m.engine.name().to_string())
            .collect()
    }
}
