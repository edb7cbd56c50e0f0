//! kiln in the browser: the embedding and chat models of kiln-core compiled to WebAssembly.
//!
//! The same model files the server loads are handed over as bytes ([`ModelFiles`] for an
//! embedding model's directory, the raw `.gguf` for a chat model). Chat is streamed a token at
//! a time, either by stepping a [`Generation`] (a worker can yield to its event loop between
//! steps, which is how a stop request gets through) or through a callback ([`Chat::generate`],
//! which stops when the callback returns `false`).
//!
//! The logic lives in plain Rust types ([`Reply`], [`load_embedder`]) that native tests
//! exercise; the `#[wasm_bindgen]` types only convert values and errors.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use kiln_core::chat_template::ChatMessage;
use kiln_core::models::llama::KvCache;
use kiln_core::sampling::{Sampler, SamplingParams};
use kiln_core::text_stream::TextStream;
use kiln_core::{ChatModel, EmbedderOptions, SentenceEmbedder};
use serde::Deserialize;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Converts a kiln error into a JavaScript `Error` carrying its message.
fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The files of a model, by their path inside the model directory, gathered before loading.
#[wasm_bindgen]
#[derive(Default)]
pub struct ModelFiles {
    files: HashMap<String, Vec<u8>>,
}

#[wasm_bindgen]
impl ModelFiles {
    /// An empty set of files.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the file `name`, e.g. `config.json` or `1_Pooling/config.json`.
    pub fn add(&mut self, name: String, bytes: Vec<u8>) {
        self.files.insert(name, bytes);
    }

    /// Number of files added.
    pub fn count(&self) -> usize {
        self.files.len()
    }
}

/// Loads a sentence-embedding model from its files (see [`SentenceEmbedder::from_files`]).
pub fn load_embedder(files: &ModelFiles) -> kiln_core::Result<SentenceEmbedder> {
    let get = |name: &str| files.files.get(name).map(Vec::as_slice);
    SentenceEmbedder::from_files(&get, &EmbedderOptions::default())
}

/// A sentence-embedding model (e.g. all-MiniLM-L6-v2) running in WebAssembly.
#[wasm_bindgen]
pub struct Embedder {
    inner: SentenceEmbedder,
}

#[wasm_bindgen]
impl Embedder {
    /// Loads the model from its files; `files` is consumed (its memory is freed after loading).
    #[wasm_bindgen(constructor)]
    pub fn new(files: ModelFiles) -> Result<Embedder, JsError> {
        let inner = load_embedder(&files).map_err(js_err)?;
        Ok(Self { inner })
    }

    /// Length of the vectors this model returns.
    pub fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    /// Maximum number of tokens per input; longer inputs are truncated.
    #[wasm_bindgen(js_name = maxTokens)]
    pub fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }

    /// The embedding of one text (normalized when the model's pipeline says so).
    #[wasm_bindgen(js_name = embedOne)]
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, JsError> {
        let mut v = self.inner.embed(&[text]).map_err(js_err)?;
        Ok(v.pop().unwrap_or_default())
    }

    /// The embeddings of `texts`, one `Float32Array` each, computed in one batch.
    pub fn embed(&self, texts: Vec<String>) -> Result<js_sys::Array, JsError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = self.inner.embed(&refs).map_err(js_err)?;
        Ok(vectors
            .iter()
            .map(|v| JsValue::from(js_sys::Float32Array::from(v.as_slice())))
            .collect())
    }
}

/// Generation settings, as JSON: OpenAI's names, all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplyOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus sampling threshold.
    pub top_p: f32,
    /// Seed of the sampler; without one each reply differs.
    pub seed: Option<u64>,
}

impl Default for ReplyOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.7,
            top_p: 0.95,
            seed: None,
        }
    }
}

/// One reply being generated: the model, its cache, the sampler, and the text streamed so far.
pub struct Reply {
    model: Rc<ChatModel>,
    cache: KvCache,
    sampler: Sampler,
    /// Tokens to run next: the prompt first, then each sampled token.
    pending: Vec<u32>,
    generated: Vec<u32>,
    /// The text of `generated`, decoded step by step.
    text: TextStream,
    prompt_tokens: usize,
    /// Bytes of the decoded reply already handed out.
    emitted: usize,
    max_tokens: usize,
    finish: Option<&'static str>,
}

impl Reply {
    /// Starts a reply to `messages` (rendered with the model's chat template).
    pub fn start(
        model: Rc<ChatModel>,
        messages: &[ChatMessage],
        options: &ReplyOptions,
    ) -> kiln_core::Result<Self> {
        let prompt = model.encode_chat(messages)?;
        Self::from_tokens(model, prompt, options)
    }

    /// Starts a continuation of already tokenized `prompt`.
    pub fn from_tokens(
        model: Rc<ChatModel>,
        prompt: Vec<u32>,
        options: &ReplyOptions,
    ) -> kiln_core::Result<Self> {
        let params = SamplingParams {
            temperature: options.temperature,
            top_p: options.top_p,
            seed: options.seed,
            ..SamplingParams::default()
        };
        params.validate().map_err(kiln_core::Error::Unsupported)?;
        if prompt.is_empty() {
            return Err(kiln_core::Error::Tokenizer("the prompt is empty".into()));
        }
        let capacity = prompt.len().saturating_add(options.max_tokens);
        if prompt.len() >= model.model.max_positions() {
            return Err(kiln_core::Error::Unsupported(format!(
                "the prompt has {} tokens; the model reads at most {}",
                prompt.len(),
                model.model.max_positions()
            )));
        }
        let cache = model.model.new_cache(capacity);
        Ok(Self {
            model,
            cache,
            sampler: Sampler::new(params),
            prompt_tokens: prompt.len(),
            pending: prompt,
            generated: Vec::new(),
            text: TextStream::new(),
            emitted: 0,
            max_tokens: options.max_tokens,
            finish: None,
        })
    }

    /// Runs one forward pass (the whole prompt the first time) and samples one token.
    ///
    /// Returns the text that token completes (possibly empty, e.g. half of a multi-byte
    /// character), or `None` once the reply is finished (see [`Self::finish_reason`]).
    pub fn step(&mut self) -> kiln_core::Result<Option<String>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.generated.len() >= self.max_tokens || self.cache.len() >= self.cache.capacity() {
            return Ok(self.finish_with("length"));
        }
        let logits = self.model.model.forward(&self.pending, &mut self.cache)?;
        let token = self.sampler.sample(&logits, &self.generated);
        let tok = &self.model.tokenizer;
        if tok.is_stop(token) {
            return Ok(self.finish_with("stop"));
        }
        self.generated.push(token);
        self.pending = vec![token];
        // Only the new tokens are decoded; an incomplete character waits for the next token.
        self.text.push(tok, &self.generated)?;
        let piece = self.text.text()[self.emitted..].to_string();
        self.emitted = self.text.text().len();
        Ok(Some(piece))
    }

    /// Ends the reply; any held-back text is returned as the last piece.
    fn finish_with(&mut self, reason: &'static str) -> Option<String> {
        self.finish = Some(reason);
        let _ = self.text.finish(&self.model.tokenizer, &self.generated);
        let text = self.text.text();
        (text.len() > self.emitted).then(|| {
            let p = text[self.emitted..].to_string();
            self.emitted = text.len();
            p
        })
    }

    /// Stops the reply early (reason `cancelled`).
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some("cancelled");
        }
    }

    /// Why the reply ended (`stop`, `length` or `cancelled`), or `None` while it runs.
    pub fn finish_reason(&self) -> Option<&'static str> {
        self.finish
    }

    /// Tokens of the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Tokens generated so far.
    pub fn completion_tokens(&self) -> usize {
        self.generated.len()
    }
}

/// A GGUF chat model (e.g. SmolLM2-135M-Instruct) running in WebAssembly.
#[wasm_bindgen]
pub struct Chat {
    model: Rc<ChatModel>,
}

/// Parses the JSON of a message list and of the options.
fn parse_request(
    messages_json: &str,
    options_json: &str,
) -> Result<(Vec<ChatMessage>, ReplyOptions), JsError> {
    let messages: Vec<ChatMessage> = serde_json::from_str(messages_json)
        .map_err(|e| js_err(format!("messages: expected [{{role, content}}]: {e}")))?;
    let options: ReplyOptions = if options_json.trim().is_empty() {
        ReplyOptions::default()
    } else {
        serde_json::from_str(options_json).map_err(|e| js_err(format!("options: {e}")))?
    };
    Ok((messages, options))
}

#[wasm_bindgen]
impl Chat {
    /// Loads a model from the bytes of its `.gguf` file.
    #[wasm_bindgen(constructor)]
    pub fn new(gguf: Vec<u8>) -> Result<Chat, JsError> {
        let model = ChatModel::from_gguf_bytes(gguf).map_err(js_err)?;
        if !model.has_chat_template() {
            return Err(js_err("this model has no chat template"));
        }
        Ok(Self {
            model: Rc::new(model),
        })
    }

    /// The model's architecture name from the file (e.g. `llama`).
    pub fn architecture(&self) -> String {
        self.model.model.config().arch.clone()
    }

    /// Starts a reply to `messages_json` (`[{"role": "user", "content": "..."}]`) with the
    /// options in `options_json` (`{"max_tokens", "temperature", "top_p", "seed"}`, or empty);
    /// call [`Generation::next`] for each piece.
    pub fn start(&self, messages_json: &str, options_json: &str) -> Result<Generation, JsError> {
        let (messages, options) = parse_request(messages_json, options_json)?;
        let reply = Reply::start(self.model.clone(), &messages, &options).map_err(js_err)?;
        Ok(Generation { reply })
    }

    /// Generates a whole reply, calling `on_token(piece)` for each piece of text as it is
    /// produced; returning `false` from the callback stops generation. Returns the reply.
    pub fn generate(
        &self,
        messages_json: &str,
        options_json: &str,
        on_token: &js_sys::Function,
    ) -> Result<String, JsError> {
        let mut g = self.start(messages_json, options_json)?;
        let mut all = String::new();
        while let Some(piece) = g.reply.step().map_err(js_err)? {
            if piece.is_empty() {
                continue;
            }
            all.push_str(&piece);
            let go_on = on_token
                .call1(&JsValue::NULL, &JsValue::from_str(&piece))
                .map_err(|e| js_err(format!("on_token threw: {e:?}")))?;
            if go_on == JsValue::FALSE {
                g.reply.cancel();
                break;
            }
        }
        Ok(all)
    }
}

/// A reply in progress, stepped from JavaScript one token at a time.
#[wasm_bindgen]
pub struct Generation {
    reply: Reply,
}

#[wasm_bindgen]
impl Generation {
    /// Generates one token: the text it completes (possibly empty), or `undefined` when done.
    #[allow(clippy::should_implement_trait)] // a JavaScript-facing name, not an Iterator
    pub fn next(&mut self) -> Result<Option<String>, JsError> {
        self.reply.step().map_err(js_err)
    }

    /// Stops the reply; later calls to `next` return `undefined`.
    pub fn cancel(&mut self) {
        self.reply.cancel();
    }

    /// `stop`, `length` or `cancelled` once finished; `undefined` while running.
    #[wasm_bindgen(js_name = finishReason)]
    pub fn finish_reason(&self) -> Option<String> {
        self.reply.finish_reason().map(str::to_string)
    }

    /// Tokens of the prompt.
    #[wasm_bindgen(js_name = promptTokens)]
    pub fn prompt_tokens(&self) -> usize {
        self.reply.prompt_tokens()
    }

    /// Tokens generated so far.
    #[wasm_bindgen(js_name = completionTokens)]
    pub fn completion_tokens(&self) -> usize {
        self.reply.completion_tokens()
    }
}

/// Whether this build runs the kernels' SIMD128 paths.
#[wasm_bindgen(js_name = simd128)]
pub fn simd128() -> bool {
    cfg!(target_feature = "simd128")
}
