//! `kiln generate` and `kiln chat`: text generation from the command line, streamed to stdout.

use crate::args::{ChatArgs, GenerateArgs, SamplingArgs};
use crate::model_source::{resolve, ModelKind, ResolvedModel};
use anyhow::{bail, Context, Result};
use kiln_core::chat_template::ChatMessage;
use kiln_core::sampling::SamplingParams;
use kiln_core::ChatModel;
use kiln_engine::{GenerationConfig, GenerationEngine, GenerationEvent, GenerationRequest};
use std::io::{BufRead, Write};

/// Resolves `spec` to a chat model and loads it, behind a spinner (also `kiln bench`'s).
pub(crate) fn load_chat_model(
    spec: &str,
    source: &crate::args::ModelArgs,
) -> Result<(ResolvedModel, ChatModel)> {
    let resolved = resolve(spec, source)?;
    if resolved.kind != ModelKind::Chat {
        bail!("`{spec}` is an embedding model; generation needs a .gguf chat model");
    }
    let spinner = crate::progress::spinner(format!("loading {}", resolved.dir.display()));
    let model = ChatModel::load(&resolved.dir)
        .with_context(|| format!("loading {}", resolved.dir.display()))?;
    spinner.finish_and_clear();
    Ok((resolved, model))
}

fn load(spec: &str, source: &crate::args::ModelArgs) -> Result<(ResolvedModel, GenerationEngine)> {
    let (resolved, model) = load_chat_model(spec, source)?;
    let engine = GenerationEngine::start(resolved.name.clone(), model, GenerationConfig::default());
    Ok((resolved, engine))
}

fn params(s: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
        ..SamplingParams::default()
    }
}

/// Runs one request, printing text as it arrives; returns the full text. With `stats`, prints
/// the token counts and speeds to stderr at the end.
fn stream(
    engine: &GenerationEngine,
    prompt: Vec<u32>,
    s: &SamplingArgs,
    stats: bool,
) -> Result<String> {
    let p = params(s);
    p.validate().map_err(anyhow::Error::msg)?;
    let room = engine.max_context().saturating_sub(prompt.len());
    let mut rx = engine.submit(GenerationRequest {
        prompt,
        params: p,
        max_tokens: s.max_tokens.min(room),
        stop: Vec::new(),
    })?;
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    let start = std::time::Instant::now();
    let mut first = None;
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenerationEvent::Text(t) => {
                first.get_or_insert_with(|| start.elapsed());
                text.push_str(&t);
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
            }
            GenerationEvent::Done {
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                let _ = writeln!(out);
                if stats {
                    let first = first.map(|d| d.as_secs_f64());
                    let total = start.elapsed().as_secs_f64();
                    eprintln!(
                        "{}",
                        stats_line(prompt_tokens, completion_tokens, first, total)
                    );
                }
                return Ok(text);
            }
            GenerationEvent::Error(e) => bail!(e),
        }
    }
    let _ = writeln!(out);
    Ok(text)
}

/// The `--stats` line: token counts, milliseconds to the first text and the decode rate after it
/// (left out where fewer than two tokens leave no interval to measure).
fn stats_line(prompt: usize, completion: usize, first: Option<f64>, total: f64) -> String {
    let first_text = match first {
        Some(s) => format!("first text after {:.0} ms", s * 1e3),
        None => "no text".to_string(),
    };
    let rate = match first.and_then(|s| decode_rate(completion, s, total)) {
        Some(r) => format!(" ({r:.1} tokens/s after the first)"),
        None => String::new(),
    };
    format!("{prompt} prompt tokens, {first_text}; {completion} tokens in {total:.2} s{rate}")
}

/// Tokens per second after the first of `tokens`, which came `first` seconds after the start
/// and the last `total` seconds after it; `None` where fewer than two tokens leave no interval.
pub(crate) fn decode_rate(tokens: usize, first: f64, total: f64) -> Option<f64> {
    (tokens >= 2 && total > first).then(|| (tokens - 1) as f64 / (total - first))
}

/// Runs `kiln generate`.
pub fn run_generate(args: GenerateArgs) -> Result<()> {
    let (_, engine) = load(&args.model, &args.source)?;
    let prompt = engine.model().encode_prompt(&args.prompt)?;
    stream(&engine, prompt, &args.sampling, args.stats).map(|_| ())
}

/// Runs `kiln chat`.
pub fn run_chat(args: ChatArgs) -> Result<()> {
    let (resolved, engine) = load(&args.model, &args.source)?;
    let fresh = || -> Vec<ChatMessage> {
        args.system
            .iter()
            .map(|s| ChatMessage::new("system", s))
            .collect()
    };
    let mut history = fresh();
    eprintln!(
        "chatting with {} (/reset to start over, /quit or Ctrl-D to leave)",
        resolved.name
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => return Ok(()),
            "/reset" => {
                history = fresh();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", line.trim_end()));
        let prompt = engine.model().encode_chat(&history)?;
        let reply = stream(&engine, prompt, &args.sampling, false)?;
        history.push(ChatMessage::new("assistant", &reply));
    }
}

#[cfg(test)]
mod tests {
    use super::stats_line;

    #[test]
    fn stats_give_a_rate_only_when_two_tokens_leave_an_interval() {
        assert_eq!(
            stats_line(13, 256, Some(0.013), 1.3),
            "13 prompt tokens, first text after 13 ms; 256 tokens in 1.30 s (198.1 tokens/s after the first)"
        );
        // A model that ends at once (the end-of-text token first) printed "NaN tokens/s".
        assert_eq!(
            stats_line(9, 0, None, 0.012),
            "9 prompt tokens, no text; 0 tokens in 0.01 s"
        );
        assert_eq!(
            stats_line(9, 1, Some(0.012), 0.012),
            "9 prompt tokens, first text after 12 ms; 1 tokens in 0.01 s"
        );
    }
}
