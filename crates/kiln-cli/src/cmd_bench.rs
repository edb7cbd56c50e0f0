//! `kiln bench`: a chat model's speed on this machine, in process (the server's scheduler and
//! kernels, no HTTP): the prompt pass, one-stream decoding and the aggregate of concurrent
//! streams. The side-by-side comparison with llama.cpp and transformers is `bench/chat/run.py`.

use crate::args::BenchArgs;
use anyhow::{bail, ensure, Result};
use kiln_core::sampling::SamplingParams;
use kiln_core::ChatModel;
use kiln_engine::{GenerationConfig, GenerationEngine, GenerationEvent, GenerationRequest};
use std::time::{Duration, Instant};

/// Most concurrent streams `kiln bench` runs.
const MAX_STREAMS: usize = 256;

/// Text repeated to build a prompt of the requested length.
const PARAGRAPH: &str = "The kiln was fired for three days and three nights, and the potters took \
     turns feeding the firebox with split pine while the temperature climbed past twelve \
     hundred degrees. ";

/// What one request measured.
struct Run {
    /// From submission to the first text event (a token that completes no text yet, such as
    /// half of a multi-byte character, sends none: then this is late and the decode rate a
    /// little high; negligible for the English text used here).
    first: Duration,
    /// From submission to the end.
    total: Duration,
    /// Tokens generated.
    tokens: usize,
}

impl Run {
    /// Tokens per second after the first token; `None` without an interval to measure.
    fn decode_rate(&self) -> Option<f64> {
        crate::cmd_generate::decode_rate(
            self.tokens,
            self.first.as_secs_f64(),
            self.total.as_secs_f64(),
        )
    }
}

/// Runs `kiln bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(
        args.tokens >= 2,
        "--tokens must be at least 2 (a rate needs an interval)"
    );
    ensure!(args.prompt_tokens > 0, "--prompt-tokens must be at least 1");
    ensure!(args.stream_tokens > 0, "--stream-tokens must be at least 1");
    ensure!(
        !args.streams.is_empty() && args.streams.iter().all(|&n| n > 0),
        "--streams takes counts of at least 1, e.g. 1,4,8"
    );
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        // Every run draws the same tokens (each stream of a batch its own, see `together`).
        seed: Some(1),
        ..SamplingParams::default()
    };
    params.validate().map_err(anyhow::Error::msg)?;
    ensure!(
        params.temperature > 0.0 || params.top_p >= 1.0,
        "--top-p needs a --temperature above 0 (greedy decoding has nothing to cut)"
    );
    let started = Instant::now();
    let (resolved, model) = crate::cmd_generate::load_chat_model(&args.model, &args.source)?;
    let load = started.elapsed();
    let max_streams = args.streams.iter().copied().max().unwrap_or(1);
    ensure!(
        max_streams <= MAX_STREAMS,
        "--streams takes counts of at most {MAX_STREAMS}"
    );
    let context = model.model.max_positions();
    // The decode and aggregate requests start from an 8-token prompt.
    let short_len = 8.min(args.prompt_tokens);
    let longest = short_len.saturating_add(args.tokens.max(args.stream_tokens));
    for (need, what) in [
        (
            args.prompt_tokens.saturating_add(1),
            "--prompt-tokens plus one",
        ),
        (longest, "8 prompt tokens plus --tokens or --stream-tokens"),
    ] {
        ensure!(
            need <= context,
            "{what} ({need}) exceed the model's context of {context} positions"
        );
    }
    let defaults = GenerationConfig::default();
    let config = GenerationConfig {
        // Every run pays its whole prompt pass.
        prefix_cache_tokens: 0,
        // Every stream of the largest count runs at once, none waits in the queue.
        max_sequences: defaults.max_sequences.max(max_streams),
        max_queue: defaults.max_queue.max(max_streams),
        max_kv_tokens: defaults
            .max_kv_tokens
            .max(max_streams * (short_len + args.stream_tokens))
            .max(args.prompt_tokens + 1),
        ..defaults
    };
    let engine = GenerationEngine::start(resolved.name.clone(), model, config);
    let prompt = prompt_of(engine.model(), args.prompt_tokens)?;
    let short = prompt_of(engine.model(), short_len)?;
    // Warm-up, not measured: the first long prompt pass and the first batch of the most
    // streams pay for page faults, buffers and KV caches that later runs reuse.
    one(&engine, &params, &prompt, 1)?;
    together(&engine, &params, &short, 4, max_streams)?;
    let mut prompt_ms = Vec::new();
    for _ in 0..args.runs {
        prompt_ms.push(one(&engine, &params, &prompt, 1)?.first.as_secs_f64() * 1e3);
    }
    let mut rates = Vec::new();
    let mut decoded = Vec::new();
    for _ in 0..args.runs {
        let r = one(&engine, &params, &short, args.tokens)?;
        decoded.push(r.tokens);
        rates.extend(r.decode_rate());
    }
    let mut aggregate = Vec::new();
    for &n in &args.streams {
        let mut tps = Vec::new();
        for _ in 0..args.runs {
            let start = Instant::now();
            let runs = together(&engine, &params, &short, args.stream_tokens, n)?;
            let tokens: usize = runs.iter().map(|r| r.tokens).sum();
            tps.push(tokens as f64 / start.elapsed().as_secs_f64());
        }
        aggregate.push((n, median(tps)));
    }
    let report = Report {
        model: resolved.name,
        tokens: args.tokens,
        stream_tokens: args.stream_tokens,
        decode_prompt_tokens: short.len(),
        threads: kiln_kernels::parallel::threads(),
        temperature: params.temperature,
        top_p: params.top_p,
        load_s: load.as_secs_f64(),
        prompt_tokens: prompt.len(),
        prompt_ms: median(prompt_ms),
        decode_tokens: decoded,
        decode_tps: (!rates.is_empty()).then(|| median(rates)),
        aggregate,
        runs: args.runs,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Exactly `n` prompt tokens: the model's encoding of [`PARAGRAPH`] repeated, cut to length.
fn prompt_of(model: &ChatModel, n: usize) -> Result<Vec<u32>> {
    let mut text = String::from(PARAGRAPH);
    loop {
        let ids = model.encode_prompt(&text)?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        ensure!(
            text.len() < 1 << 24,
            "the tokenizer makes too few tokens of text"
        );
        // Doubling keeps the encodings few for long prompts.
        text = text.repeat(2);
    }
}

/// One request of `prompt` for at most `max_tokens`, timed.
fn one(
    engine: &GenerationEngine,
    params: &SamplingParams,
    prompt: &[u32],
    max_tokens: usize,
) -> Result<Run> {
    Ok(together(engine, params, prompt, max_tokens, 1)?.remove(0))
}

/// `n` requests submitted at once, each timed from the submission; request `i` draws with
/// the seed of `params` plus `i`.
fn together(
    engine: &GenerationEngine,
    params: &SamplingParams,
    prompt: &[u32],
    max_tokens: usize,
    n: usize,
) -> Result<Vec<Run>> {
    let start = Instant::now();
    let receivers = (0..n)
        .map(|i| {
            engine.submit(GenerationRequest {
                prompt: prompt.to_vec(),
                params: SamplingParams {
                    seed: params.seed.map(|s| s + i as u64),
                    ..params.clone()
                },
                max_tokens,
                stop: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The channels buffer every event and the streams are read one after another, so each
    // time is taken when its event is read: exact for the first stream, late for the others.
    // Only single requests' times and the whole call's duration are reported.
    receivers
        .into_iter()
        .map(|mut rx| {
            let mut first = None;
            while let Some(event) = rx.blocking_recv() {
                match event {
                    GenerationEvent::Text(_) => {
                        first.get_or_insert_with(|| start.elapsed());
                    }
                    GenerationEvent::Done {
                        completion_tokens, ..
                    } => {
                        let total = start.elapsed();
                        return Ok(Run {
                            first: first.unwrap_or(total),
                            total,
                            tokens: completion_tokens,
                        });
                    }
                    GenerationEvent::Error(e) => bail!(e),
                }
            }
            bail!("the engine stopped before the request ended")
        })
        .collect()
}

/// The median of `v` (the mean of the middle two for an even count); `v` is not empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// What `kiln bench` prints.
struct Report {
    model: String,
    tokens: usize,
    stream_tokens: usize,
    decode_prompt_tokens: usize,
    threads: usize,
    /// 0 for greedy.
    temperature: f32,
    top_p: f32,
    load_s: f64,
    prompt_tokens: usize,
    prompt_ms: f64,
    decode_tokens: Vec<usize>,
    decode_tps: Option<f64>,
    aggregate: Vec<(usize, f64)>,
    runs: usize,
}

impl Report {
    /// Lines for a person.
    fn text(&self) -> String {
        let sampling = if self.temperature > 0.0 {
            format!("temperature {}, top-p {}", self.temperature, self.top_p)
        } else {
            "greedy".into()
        };
        let mut s = format!(
            "{} on {} kernel threads, {sampling}, medians of {} runs\n",
            self.model, self.threads, self.runs
        );
        s += &format!("load                        {:>9.2} s\n", self.load_s);
        s += &format!(
            "first token, {:>5}-token prompt {:>7.1} ms\n",
            self.prompt_tokens, self.prompt_ms
        );
        s += &match self.decode_tps {
            Some(r) => format!(
                "decode, one stream          {r:>9.1} tokens/s ({} tokens)\n",
                self.tokens
            ),
            None => {
                "decode, one stream          no rate: the model ended every run at once\n".into()
            }
        };
        s += &format!("aggregate, {} tokens per stream:\n", self.stream_tokens);
        for (n, tps) in &self.aggregate {
            s += &format!(
                "  {n:>3} stream{}                {tps:>9.1} tokens/s\n",
                if *n == 1 { " " } else { "s" }
            );
        }
        s
    }

    /// One JSON object.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model,
            "threads": self.threads,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "runs": self.runs,
            "load_s": self.load_s,
            "prompt_tokens": self.prompt_tokens,
            "first_token_ms": self.prompt_ms,
            "tokens": self.tokens,
            "stream_tokens": self.stream_tokens,
            "decode_prompt_tokens": self.decode_prompt_tokens,
            "decode_tokens": self.decode_tokens,
            "decode_tokens_per_s": self.decode_tps,
            "aggregate_tokens_per_s": self.aggregate.iter()
                .map(|(n, t)| serde_json::json!({"streams": n, "tokens_per_s": t}))
                .collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{median, Run};
    use std::time::Duration;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_decode_rate_counts_tokens_after_the_first() {
        let run = |tokens, first_ms, total_ms| Run {
            first: Duration::from_millis(first_ms),
            total: Duration::from_millis(total_ms),
            tokens,
        };
        assert_eq!(run(11, 100, 600).decode_rate(), Some(20.0));
        assert_eq!(run(1, 100, 600).decode_rate(), None);
        assert_eq!(run(5, 100, 100).decode_rate(), None);
    }
}
