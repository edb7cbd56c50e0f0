//! The native side of bench/wasm: the same kiln-wasm code paths as the browser benchmark
//! (an embedding of one sentence; a greedy reply decoded token by token), run natively.
//! Prints one JSON object. `RAYON_NUM_THREADS=1` gives the single-thread figure.
//!
//! cargo run --release -p kiln-wasm --example bench_native -- MODELS_DIR [RUNS]

use kiln_core::chat_template::ChatMessage;
use kiln_core::{ChatModel, EmbedderOptions, SentenceEmbedder};
use kiln_wasm::{Reply, ReplyOptions};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let models = PathBuf::from(args.next().unwrap_or_else(|| "models".into()));
    let runs: usize = args.next().map_or(5, |r| r.parse().expect("RUNS"));
    let embedder = SentenceEmbedder::load(
        &models.join("all-MiniLM-L6-v2"),
        &EmbedderOptions::default(),
    )
    .expect("all-MiniLM-L6-v2");
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank.";
    for _ in 0..5 {
        embedder.embed(&[sentence]).unwrap();
    }
    let embed_ms: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            embedder.embed(&[sentence]).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    let bytes = std::fs::read(models.join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect("SmolLM2 gguf");
    let chat = Rc::new(ChatModel::from_gguf_bytes(bytes).unwrap());
    let messages = [ChatMessage::new(
        "user",
        "Write a short story about a lighthouse keeper.",
    )];
    let options = ReplyOptions {
        max_tokens: 64,
        temperature: 0.0,
        ..ReplyOptions::default()
    };
    let (mut prefill_ms, mut decode_tps, mut tokens) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let mut reply = Reply::start(chat.clone(), &messages, &options).unwrap();
        let t = Instant::now();
        reply.step().unwrap();
        prefill_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        while reply.step().unwrap().is_some() {}
        let decoded = reply.completion_tokens() - 1;
        tokens = decoded;
        decode_tps.push(decoded as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
            "embed_ms_median": median(embed_ms),
            "chat_prompt_tokens": Reply::start(chat, &messages, &options).unwrap().prompt_tokens(),
            "chat_first_token_ms_median": median(prefill_ms),
            "decode_tokens": tokens,
            "decode_tokens_per_s_median": median(decode_tps),
        })
    );
}
