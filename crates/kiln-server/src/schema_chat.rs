//! Request and response bodies of OpenAI's chat and text completions.

use crate::schema::TextInput;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A message's content: text, or a list of typed parts of which kiln reads the text ones.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// The part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of a chat request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// The served model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<MessageIn>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Top-k (kiln extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Min-p (kiln extension).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_p: Option<f32>,
    /// Presence penalty.
    #[serde(default)]
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default)]
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (kiln extension).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    pub repetition_penalty: Option<f32>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<TextInput>,
    /// Number of choices (1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<usize>,
    /// End-user identifier.
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /v1/completions` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// The served model name.
    pub model: String,
    /// The prompt (one string).
    pub prompt: TextInput,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (default 16, as OpenAI).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Top-k (kiln extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Min-p (kiln extension).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_p: Option<f32>,
    /// Presence penalty.
    #[serde(default)]
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default)]
    #[schema(minimum = -2.0, maximum = 2.0)]
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (kiln extension).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    pub repetition_penalty: Option<f32>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<TextInput>,
    /// Number of choices (1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<usize>,
    /// End-user identifier.
    #[serde(default)]
    pub user: Option<String>,
}

/// Token counts of a completion.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CompletionUsage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

/// The assistant's message in a chat completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `"assistant"`.
    pub role: &'static str,
    /// The generated text.
    pub content: String,
}

/// One choice of a chat completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    /// Always 0 (kiln generates one choice).
    pub index: usize,
    /// The reply.
    pub message: AssistantMessage,
    /// Always null (log probabilities are not computed).
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<()>,
    /// `stop` (an end-of-turn token or a stop string) or `length` (`max_tokens` reached).
    pub finish_reason: &'static str,
}

/// `POST /v1/chat/completions` response when not streaming.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionResponse {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `"chat.completion"`.
    pub object: &'static str,
    /// Unix time the request was accepted.
    pub created: u64,
    /// The served model name.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: CompletionUsage,
}

/// One choice of a text completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextChoice {
    /// Always 0.
    pub index: usize,
    /// The generated text.
    pub text: String,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<()>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// `POST /v1/completions` response when not streaming.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextCompletionResponse {
    /// `cmpl-...`.
    pub id: String,
    /// Always `"text_completion"`.
    pub object: &'static str,
    /// Unix time the request was accepted.
    pub created: u64,
    /// The served model name.
    pub model: String,
    /// One choice.
    pub choices: Vec<TextChoice>,
    /// Token counts.
    pub usage: CompletionUsage,
}
