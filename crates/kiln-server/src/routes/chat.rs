//! `POST /v1/chat/completions` and `POST /v1/completions`, streaming (SSE) or not.

use crate::auth::UsageMeter;
use crate::error::{ApiError, Refusals};
use crate::json::JsonBody;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::Engine;
use crate::schema::TextInput;
use crate::schema_chat::{
    AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
    CompletionUsage, MessageContent, TextChoice, TextCompletionResponse,
};
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::chat_template::ChatMessage;
use kiln_core::sampling::SamplingParams;
use kiln_engine::{GenerationEngine, GenerationEvent, GenerationRequest};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Most stop strings per request (as OpenAI).
const MAX_STOP: usize = 4;

/// Settings common to both routes, after validation.
struct Plan {
    engine: Arc<GenerationEngine>,
    model: String,
    prompt: Vec<u32>,
    max_tokens: usize,
    params: SamplingParams,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

/// The knobs both request types share, before validation.
struct Knobs {
    max_tokens: Option<usize>,
    /// `max_tokens` when the request gives none.
    default_max: usize,
    stream: bool,
    include_usage: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<TextInput>,
    n: Option<usize>,
}

/// Builds [`Knobs`] from a chat or completion request (their sampling fields share names).
macro_rules! knobs {
    ($req:ident, max_tokens: $max:expr, default_max: $default:expr) => {
        Knobs {
            max_tokens: $max,
            default_max: $default,
            stream: $req.stream,
            include_usage: $req.stream_options.is_some_and(|o| o.include_usage),
            temperature: $req.temperature,
            top_p: $req.top_p,
            top_k: $req.top_k,
            min_p: $req.min_p,
            presence_penalty: $req.presence_penalty,
            frequency_penalty: $req.frequency_penalty,
            repetition_penalty: $req.repetition_penalty,
            seed: $req.seed,
            stop: $req.stop,
            n: $req.n,
        }
    };
}

fn chat_engine(
    state: &AppState,
    model: &str,
    route: &str,
) -> Result<Arc<GenerationEngine>, ApiError> {
    match state.models.find(model) {
        Some(Engine::Generation(g)) => Ok(g.clone()),
        Some(other) => Err(ApiError::wrong_model_kind(model, other.kind(), route)),
        None => Err(ApiError::model_not_found(model, &state.models.names())),
    }
}

fn plan(
    engine: Arc<GenerationEngine>,
    model: String,
    prompt: Vec<u32>,
    k: Knobs,
    limits: &Limits,
) -> Result<Plan, ApiError> {
    if k.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only n = 1 is supported").with_param("n"));
    }
    if prompt.len() > limits.max_prompt_tokens {
        return Err(ApiError::invalid(format!(
            "the prompt has {} tokens; this server accepts at most {} prompt tokens (--max-prompt-tokens)",
            prompt.len(),
            limits.max_prompt_tokens
        ))
        .with_param("messages"));
    }
    let context = engine.max_context();
    if prompt.len() >= context {
        return Err(ApiError::invalid(format!(
            "the prompt has {} tokens; model `{model}` accepts at most {} prompt tokens (context {context})",
            prompt.len(),
            context - 1
        ))
        .with_param("messages"));
    }
    let room = context - prompt.len();
    let max_tokens = match k.max_tokens {
        Some(0) => return Err(ApiError::invalid("max_tokens must be at least 1").with_param("max_tokens")),
        Some(m) if m > limits.max_completion_tokens => {
            return Err(ApiError::invalid(format!(
                "max_tokens is {m}; this server generates at most {} tokens per request (--max-completion-tokens)",
                limits.max_completion_tokens
            ))
            .with_param("max_tokens"))
        }
        Some(m) if m > room => {
            return Err(ApiError::invalid(format!(
                "max_tokens is {m}, but only {room} tokens fit after the {}-token prompt (context {context})",
                prompt.len()
            ))
            .with_param("max_tokens"))
        }
        Some(m) => m,
        None => k.default_max.min(room).min(limits.max_completion_tokens),
    };
    let defaults = SamplingParams::default();
    let params = SamplingParams {
        temperature: k.temperature.unwrap_or(defaults.temperature),
        top_p: k.top_p.unwrap_or(defaults.top_p),
        top_k: k.top_k.unwrap_or(defaults.top_k),
        min_p: k.min_p.unwrap_or(defaults.min_p),
        presence_penalty: k.presence_penalty.unwrap_or(0.0),
        frequency_penalty: k.frequency_penalty.unwrap_or(0.0),
        repetition_penalty: k.repetition_penalty.unwrap_or(1.0),
        seed: k.seed,
    };
    params.validate().map_err(ApiError::invalid)?;
    let stop = k.stop.map(TextInput::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(
            ApiError::invalid(format!("at most {MAX_STOP} stop strings are allowed"))
                .with_param("stop"),
        );
    }
    Ok(Plan {
        engine,
        model,
        prompt,
        max_tokens,
        params,
        stop,
        stream: k.stream,
        include_usage: k.include_usage,
    })
}

fn message_text(content: MessageContent) -> Result<String, ApiError> {
    match content {
        MessageContent::Text(t) => Ok(t),
        MessageContent::Parts(parts) => parts
            .into_iter()
            .map(|p| match (p.kind.as_str(), p.text) {
                ("text", Some(t)) => Ok(t),
                (kind, _) => Err(ApiError::invalid(format!(
                    "content parts of type `{kind}` are not supported; send text"
                ))
                .with_param("messages")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join("")),
    }
}

/// Handles `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "generation", request_body = ChatCompletionRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The reply; with `stream: true`, server-sent events of `chat.completion.chunk` objects ending with `data: [DONE]`", content(
            (ChatCompletionResponse = "application/json"),
            (String = "text/event-stream"))),
        Refusals))]
pub async fn chat_completions(
    State(state): State<AppState>,
    meter: UsageMeter,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let engine = chat_engine(&state, &req.model, "/v1/chat/completions")?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("`messages` must not be empty").with_param("messages"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}] has role `{other}`; use system, developer, user or assistant"
                ))
                .with_param("messages"))
            }
        };
        messages.push(ChatMessage::new(role, &message_text(m.content)?));
    }
    let prompt = engine
        .model()
        .encode_chat(&messages)
        .map_err(|e| ApiError::invalid(e.to_string()).with_param("messages"))?;
    let knobs = knobs!(req, max_tokens: req.max_completion_tokens.or(req.max_tokens), default_max: usize::MAX);
    let p = plan(engine, req.model, prompt, knobs, &state.limits)?;
    run(p, Kind::Chat, meter, &state).await
}

/// Handles `POST /v1/completions`.
#[utoipa::path(post, path = "/v1/completions", tag = "generation", request_body = CompletionRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent events of `text_completion` chunks ending with `data: [DONE]`", content(
            (TextCompletionResponse = "application/json"),
            (String = "text/event-stream"))),
        Refusals))]
pub async fn completions(
    State(state): State<AppState>,
    meter: UsageMeter,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let engine = chat_engine(&state, &req.model, "/v1/completions")?;
    let prompts = req.prompt.into_vec();
    let [prompt] = prompts.as_slice() else {
        return Err(ApiError::invalid("send exactly one prompt").with_param("prompt"));
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("`prompt` must not be empty").with_param("prompt"));
    }
    let ids = engine
        .model()
        .encode_prompt(prompt)
        .map_err(|e| ApiError::invalid(e.to_string()).with_param("prompt"))?;
    // OpenAI's default for completions is 16 tokens.
    let knobs = knobs!(req, max_tokens: req.max_tokens, default_max: 16);
    let p = plan(engine, req.model, ids, knobs, &state.limits)?;
    run(p, Kind::Completion, meter, &state).await
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_id(kind: Kind) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    format!("{prefix}-{:x}{n:06x}", unix_now())
}

async fn run(
    p: Plan,
    kind: Kind,
    meter: UsageMeter,
    state: &AppState,
) -> Result<Response, ApiError> {
    let prompt_tokens = p.prompt.len();
    let request = GenerationRequest {
        prompt: p.prompt,
        params: p.params,
        max_tokens: p.max_tokens,
        stop: p.stop,
    };
    let rx = p.engine.submit(request)?;
    // The prompt counts once accepted, even if the client leaves before the answer ends.
    meter.add(prompt_tokens, 0);
    let meta = Meta {
        id: request_id(kind),
        created: unix_now(),
        watch: GenerationWatch::new(state.metrics.clone(), &p.model),
        model: p.model,
        kind,
        meter,
    };
    if p.stream {
        // The whole stream must end by the deadline; the shutdown timeout can end it sooner.
        let ends = StreamEnds {
            deadline: Box::pin(tokio::time::sleep(
                state
                    .limits
                    .request_timeout
                    .unwrap_or(Duration::from_secs(100 * 365 * 86_400)),
            )),
            closing: Box::pin(state.streams_closing()),
        };
        Ok(stream(rx, meta, p.include_usage, ends).into_response())
    } else {
        // The deadline of a non-streamed answer is enforced around the handler (see
        // `routes::enforce_deadline`); dropping this future drops `rx`, which cancels it.
        collect(rx, meta).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    /// Counts the tokens for the caller's API key; dropped (recording the usage) with the
    /// response or, for a stream, when the stream ends or the client leaves.
    meter: UsageMeter,
    /// Time to first token and generated tokens, for the metrics.
    watch: GenerationWatch,
}

/// Observes one generation for the metrics: the time from submission to its first text, and
/// the tokens it generated.
struct GenerationWatch {
    metrics: Arc<Metrics>,
    model: String,
    started: Instant,
    first_seen: std::sync::atomic::AtomicBool,
}

impl GenerationWatch {
    fn new(metrics: Arc<Metrics>, model: &str) -> Self {
        Self {
            metrics,
            model: model.to_string(),
            started: Instant::now(),
            first_seen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn text(&self) {
        if !self
            .first_seen
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.metrics
                .observe_first_token(&self.model, self.started.elapsed().as_secs_f64());
        }
    }

    fn done(&self, completion_tokens: usize) {
        self.metrics
            .observe_generated(&self.model, completion_tokens as u64);
    }
}

impl Meta {
    fn chunk(&self, delta: Option<Value>, text: Option<&str>, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta.unwrap_or_else(|| json!({})), "logprobs": null, "finish_reason": finish}],
            }),
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}],
            }),
        }
    }

    fn usage_chunk(&self, usage: CompletionUsage) -> Value {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": usage})
    }
}

async fn collect(
    mut rx: UnboundedReceiver<GenerationEvent>,
    meta: Meta,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenerationEvent::Text(t) => {
                meta.watch.text();
                text.push_str(&t)
            }
            GenerationEvent::Error(e) => return Err(ApiError::invalid(e)),
            GenerationEvent::Done {
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                meta.meter.add(0, completion_tokens);
                meta.watch.done(completion_tokens);
                let usage = CompletionUsage {
                    prompt_tokens,
                    completion_tokens,
                    total_tokens: prompt_tokens + completion_tokens,
                };
                let finish_reason = reason.as_str();
                let resp = match meta.kind {
                    Kind::Chat => Json(ChatCompletionResponse {
                        id: meta.id,
                        object: "chat.completion",
                        created: meta.created,
                        model: meta.model,
                        choices: vec![ChatChoice {
                            index: 0,
                            message: AssistantMessage {
                                role: "assistant",
                                content: text,
                            },
                            logprobs: None,
                            finish_reason,
                        }],
                        usage,
                    })
                    .into_response(),
                    Kind::Completion => Json(TextCompletionResponse {
                        id: meta.id,
                        object: "text_completion",
                        created: meta.created,
                        model: meta.model,
                        choices: vec![TextChoice {
                            index: 0,
                            text,
                            logprobs: None,
                            finish_reason,
                        }],
                        usage,
                    })
                    .into_response(),
                };
                return Ok(resp);
            }
        }
    }
    Err(ApiError::internal(
        "the generation engine stopped before finishing",
    ))
}

/// What ends a stream early: its request deadline, or the server's shutdown timeout.
struct StreamEnds {
    deadline: Pin<Box<tokio::time::Sleep>>,
    closing: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// The final SSE chunk of a stream ended by the server, in OpenAI's error shape.
fn error_chunk(message: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}})
}

/// The SSE stream: role chunk, text chunks, a final chunk with the finish reason, an optional
/// usage chunk, then `[DONE]`. Dropping it (client gone) drops the receiver, which frees the
/// sequence's slot at the engine's next step; so does its deadline or the shutdown timeout,
/// which end it with an error chunk and `[DONE]`.
fn stream(
    rx: UnboundedReceiver<GenerationEvent>,
    meta: Meta,
    include_usage: bool,
    ends: StreamEnds,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    enum Phase {
        Start,
        Body,
        Usage(CompletionUsage),
        Done,
        End,
    }
    let state = (rx, meta, Phase::Start, ends);
    let s = futures_util::stream::unfold(
        state,
        move |(mut rx, meta, phase, mut ends)| async move {
            let data = |v: Value| Event::default().data(v.to_string());
            match phase {
                Phase::End => None,
                Phase::Done => {
                    // Free the sequence now: the client may keep the connection open a while.
                    rx.close();
                    Some((
                        Ok(Event::default().data("[DONE]")),
                        (rx, meta, Phase::End, ends),
                    ))
                }
                Phase::Usage(u) => {
                    Some((Ok(data(meta.usage_chunk(u))), (rx, meta, Phase::Done, ends)))
                }
                Phase::Start if matches!(meta.kind, Kind::Chat) => {
                    let first = meta.chunk(
                        Some(json!({"role": "assistant", "content": ""})),
                        None,
                        None,
                    );
                    Some((Ok(data(first)), (rx, meta, Phase::Body, ends)))
                }
                Phase::Start | Phase::Body => loop {
                    let event = tokio::select! {
                        e = rx.recv() => e,
                        () = &mut ends.deadline => {
                            let c = error_chunk("the request ran past the server's deadline (--request-timeout) and was cancelled", "deadline_exceeded");
                            break Some((Ok(data(c)), (rx, meta, Phase::Done, ends)));
                        }
                        () = &mut ends.closing => {
                            let c = error_chunk("the server is shutting down and its shutdown timeout was reached", "shutting_down");
                            break Some((Ok(data(c)), (rx, meta, Phase::Done, ends)));
                        }
                    };
                    match event {
                        Some(GenerationEvent::Text(t)) if t.is_empty() => continue,
                        Some(GenerationEvent::Text(t)) => {
                            meta.watch.text();
                            let c = meta.chunk(Some(json!({"content": t})), Some(&t), None);
                            break Some((Ok(data(c)), (rx, meta, Phase::Body, ends)));
                        }
                        Some(GenerationEvent::Done {
                            reason,
                            prompt_tokens,
                            completion_tokens,
                        }) => {
                            meta.meter.add(0, completion_tokens);
                            meta.watch.done(completion_tokens);
                            let c = meta.chunk(None, None, Some(reason.as_str()));
                            let usage = CompletionUsage {
                                prompt_tokens,
                                completion_tokens,
                                total_tokens: prompt_tokens + completion_tokens,
                            };
                            let next = if include_usage {
                                Phase::Usage(usage)
                            } else {
                                Phase::Done
                            };
                            break Some((Ok(data(c)), (rx, meta, next, ends)));
                        }
                        Some(GenerationEvent::Error(e)) => {
                            let c = error_chunk(&e, "generation_failed");
                            break Some((Ok(data(c)), (rx, meta, Phase::Done, ends)));
                        }
                        None => {
                            let c = error_chunk("the generation engine stopped", "shutting_down");
                            break Some((Ok(data(c)), (rx, meta, Phase::Done, ends)));
                        }
                    }
                },
            }
        },
    );
    Sse::new(s).keep_alive(KeepAlive::default())
}
