//! Request and response bodies of OpenAI's chat and text completions.

use crate::schema::TextInput;
use serde::{Deserialize, Serialize};

/// A message's content: text, or a list of typed parts of which kiln reads the text ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// The part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of a chat request.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageIn {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The content.
    pub content: MessageContent,
    /// An optional participant name (accepted and ignored).
    #[serde(default)]
    pub name: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

// The sampling fields below repeat in both request types on purpose: serde cannot combine
// `#[serde(flatten)]` with `deny_unknown_fields`, and refusing unknown fields (a typo such as
// `temprature`) is worth the repetition.

/// `POST /v1/chat/completions` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// The served model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<MessageIn>,
    /// Streaming options.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k (kiln extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Min-p (kiln extension).
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Presence penalty.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (kiln extension).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<TextInput>,
    /// Number of choices (1).
    #[serde(default)]
    pub n: Option<usize>,
    /// End-user identifier.
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /v1/completions` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// The served model name.
    pub model: String,
    /// The prompt (one string).
    pub prompt: TextInput,
    /// Stream.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (default 16, as OpenAI).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k (kiln extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Min-p (kiln extension).
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Presence penalty.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (kiln extension).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<TextInput>,
    /// Number of choices (1).
    #[serde(default)]
    pub n: Option<usize>,
    /// End-user identifier.
    #[serde(default)]
    pub user: Option<String>,
}

/// Token counts of a completion.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CompletionUsage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}
