//! A decoder model ready to chat: weights, the tokenizer from the file, and its chat template.

use crate::chat_template::{ChatMessage, ChatTemplate, GEMMA_TEMPLATE};
use crate::error::{Error, Result};
use crate::gguf_tokenizer::GgufTokenizer;
use crate::models::llama::LlamaModel;
use crate::weights::gguf::{GgufFile, MetaValue};
use std::path::Path;

/// A loaded GGUF decoder with its tokenizer and chat template.
pub struct ChatModel {
    /// The tokenizer built from the file's metadata.
    pub tokenizer: GgufTokenizer,
    /// The decoder.
    pub model: LlamaModel,
    template: Option<ChatTemplate>,
}

impl ChatModel {
    /// Loads a `.gguf` file, or a Hugging Face decoder directory (see [`Self::load_hf`]).
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::load_hf(path);
        }
        Self::from_gguf(GgufFile::read(path)?)
    }

    /// Loads a model from the bytes of a `.gguf` file (for targets without a filesystem).
    pub fn from_gguf_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_gguf(GgufFile::parse(Path::new("model.gguf"), bytes)?)
    }

    /// Loads a model from a parsed GGUF file.
    pub fn from_gguf(mut file: GgufFile) -> Result<Self> {
        // The matrices the kernels multiply faster packed are rearranged in place, before any
        // layer shares the file's bytes.
        file.pack_for_kernels();
        let path = file.path().to_path_buf();
        let tokenizer = GgufTokenizer::from_gguf(&file)?;
        let model = LlamaModel::load(&file)?;
        if tokenizer.vocab_size() != model.config().vocab_size {
            return Err(Error::weights(
                &path,
                "the tokenizer and the embeddings disagree on the vocabulary size",
            ));
        }
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token(i))
                .unwrap_or("")
                .to_string()
        };
        let (bos, eos) = (text(tokenizer.bos), text(tokenizer.eos));
        let source = match file
            .meta("tokenizer.chat_template")
            .and_then(MetaValue::as_str)
        {
            Some(s) => Some(s.to_string()),
            None if model.config().arch.starts_with("gemma") => Some(GEMMA_TEMPLATE.to_string()),
            None => None,
        };
        let template = source
            .map(|s| ChatTemplate::new(&s, &bos, &eos))
            .transpose()?;
        Ok(Self {
            tokenizer,
            model,
            template,
        })
    }

    /// Loads a Hugging Face decoder directory: `config.json`, `model.safetensors` (or
    /// `pytorch_model.bin`), `tokenizer.json`, and the chat template from `chat_template.jinja`
    /// or `tokenizer_config.json`.
    pub fn load_hf(dir: &Path) -> Result<Self> {
        let tokenizer = GgufTokenizer::from_hf_dir(dir)?;
        let model = LlamaModel::load_hf(dir)?;
        if tokenizer.vocab_size() > model.config().vocab_size {
            return Err(Error::weights(
                dir,
                "the tokenizer has more tokens than the model's embeddings",
            ));
        }
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            let config = dir.join("tokenizer_config.json");
            std::fs::read_to_string(&config)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["chat_template"].as_str().map(str::to_string))
        };
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token(i))
                .unwrap_or("")
                .to_string()
        };
        let template = source
            .map(|s| ChatTemplate::new(&s, &text(tokenizer.bos), &text(tokenizer.eos)))
            .transpose()?;
        Ok(Self {
            tokenizer,
            model,
            template,
        })
    }

    /// Whether the model has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders `messages` into the prompt the model was trained on, opening the assistant's turn.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        self.template
            .as_ref()
            .ok_or_else(|| {
                Error::Unsupported("this model has no chat template; use completions".into())
            })?
            .render(messages, true)
    }

    /// Token ids of a rendered chat prompt (the template writes any BOS itself).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let prompt = self.render_chat(messages)?;
        self.tokenizer.encode(&prompt, false)
    }

    /// Token ids of a plain completion prompt (BOS added when the model asks for it).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(prompt, true)
    }
}
