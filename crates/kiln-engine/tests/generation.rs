//! The generation engine on the real SmolLM2 GGUF: cancellation frees a slot, slots and the
//! queue bound admission, stop strings end output, and batching does not change greedy or
//! seeded sampled text.

use kiln_core::sampling::SamplingParams;
use kiln_core::ChatModel;
use kiln_engine::{
    EngineError, FinishReason, GenerationConfig, GenerationEngine, GenerationEvent,
    GenerationRequest,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn model() -> ChatModel {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        f.is_file(),
        "run `cargo run --release -p kiln-cli -- fetch SmolLM2-135M-Instruct` (or scripts/test.sh)"
    );
    ChatModel::load(&f).unwrap()
}

/// An engine on SmolLM2 whose prefix cache keeps `tokens` positions (0: none).
fn engine_with_prefix_cache(tokens: usize) -> GenerationEngine {
    GenerationEngine::start(
        "smol",
        model(),
        GenerationConfig {
            prefix_cache_tokens: tokens,
            ..GenerationConfig::default()
        },
    )
}

fn request(
    engine: &GenerationEngine,
    prompt: &str,
    max_tokens: usize,
    stop: &[&str],
) -> GenerationRequest {
    GenerationRequest {
        prompt: engine.model().encode_prompt(prompt).unwrap(),
        params: SamplingParams::greedy(),
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
    }
}

fn collect(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>,
) -> (String, FinishReason, usize) {
    let mut text = String::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenerationEvent::Text(t) => text.push_str(&t),
            GenerationEvent::Done {
                reason,
                completion_tokens,
                ..
            } => return (text, reason, completion_tokens),
            GenerationEvent::Error(e) => panic!("{e}"),
        }
    }
    panic!("the engine stopped without finishing");
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_client_that_leaves_frees_its_sequence_and_the_queue_is_bounded() {
    let config = GenerationConfig {
        max_sequences: 1,
        max_queue: 1,
        ..GenerationConfig::default()
    };
    let engine = GenerationEngine::start("smol", model(), config);
    // A long request takes the only slot.
    let mut long = engine
        .submit(request(&engine, "Once upon a time", 2000, &[]))
        .unwrap();
    assert!(matches!(
        long.blocking_recv(),
        Some(GenerationEvent::Text(_))
    ));
    wait_until("the first request runs", || {
        engine.running_sequences() == 1 && engine.queue_depth() == 0
    });
    // The next one waits in the queue, and the one after is refused at once.
    let waiting = engine
        .submit(request(&engine, "The capital of France is", 8, &[]))
        .unwrap();
    match engine.submit(request(&engine, "Hello", 8, &[])) {
        Err(EngineError::Overloaded { queued, .. }) => assert_eq!(queued, 1),
        other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
    }
    // The first client leaves: its sequence is dropped at the next step, long before 2000 tokens.
    let left = Instant::now();
    drop(long);
    let (text, reason, n) = collect(waiting);
    assert!(
        left.elapsed() < Duration::from_secs(10),
        "the slot was not freed"
    );
    assert_eq!((reason, n), (FinishReason::Length, 8));
    assert!(text.starts_with(" Paris"), "{text}");
    wait_until("nothing runs", || engine.running_sequences() == 0);
}

#[test]
fn stop_strings_end_generation_without_being_emitted() {
    let engine = GenerationEngine::start("smol", model(), GenerationConfig::default());
    let (full, _, _) = collect(
        engine
            .submit(request(&engine, "The capital of France is", 12, &[]))
            .unwrap(),
    );
    let (cut, reason, _) = collect(
        engine
            .submit(request(&engine, "The capital of France is", 12, &["."]))
            .unwrap(),
    );
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(cut, full[..full.find('.').unwrap()]);
    // A stop string spanning three tokens (" Paris", ".", "\n\n") is found too.
    let at = full.find("s.\n").expect("the reference text has \"s.\\n\"");
    let (cut2, reason, _) = collect(
        engine
            .submit(request(&engine, "The capital of France is", 12, &["s.\n"]))
            .unwrap(),
    );
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(cut2, full[..at]);
}

#[test]
fn greedy_text_is_the_same_alone_and_in_a_batch() {
    let engine = GenerationEngine::start("smol", model(), GenerationConfig::default());
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Water boils at",
        "My favourite colour is",
    ];
    let (alone, together) = alone_and_together(&engine, prompts.len(), |i| {
        request(&engine, prompts[i], 16, &[])
    });
    assert_eq!(alone, together);
}

/// The texts of requests `make(0..n)` submitted one after another (each alone), then all at
/// once (in one batch).
fn alone_and_together(
    engine: &GenerationEngine,
    n: usize,
    make: impl Fn(usize) -> GenerationRequest,
) -> (Vec<String>, Vec<String>) {
    let alone = (0..n)
        .map(|i| collect(engine.submit(make(i)).unwrap()).0)
        .collect();
    let receivers: Vec<_> = (0..n).map(|i| engine.submit(make(i)).unwrap()).collect();
    let together = receivers.into_iter().map(|rx| collect(rx).0).collect();
    (alone, together)
}

/// Seeded sampling gives each request the same text alone and in a batch, where the step's
/// draws run on the kernel threads; different seeds give different texts.
#[test]
fn seeded_sampled_text_is_the_same_alone_and_in_a_batch() {
    let engine = GenerationEngine::start("smol", model(), GenerationConfig::default());
    let prompts = [
        "Once upon a time",
        "My favourite colour is",
        "The best thing about kilns is",
        "Write a poem about the sea:",
        "Once upon a time",
    ];
    let (alone, together) = alone_and_together(&engine, prompts.len(), |i| GenerationRequest {
        params: SamplingParams {
            temperature: 1.0,
            top_p: 0.95,
            seed: Some(100 + i as u64),
            ..SamplingParams::default()
        },
        ..request(&engine, prompts[i], 24, &[])
    });
    assert_eq!(alone, together);
    // The first and last prompts are the same, their seeds not.
    assert_ne!(alone[0], alone[4], "different seeds, same text");
}

#[test]
fn a_finished_sequence_s_cache_serves_the_next_one_without_changing_the_text() {
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea,",
        "The capital of France is",
    ];
    let texts = |engine: &GenerationEngine, prompts: &[&str]| -> Vec<String> {
        prompts
            .iter()
            .map(|p| collect(engine.submit(request(engine, p, 24, &[])).unwrap()).0)
            .collect()
    };
    // A fresh engine per prompt: every sequence starts in a new cache.
    let fresh: Vec<String> = prompts
        .iter()
        .map(|p| {
            let engine = GenerationEngine::start("smol", model(), GenerationConfig::default());
            texts(&engine, &[p])
        })
        .collect::<Vec<_>>()
        .concat();
    // One engine, no prefix cache: the second and third prompts start in the emptied cache
    // of the one before (a longer one, then a shorter one): any position left over would
    // change their text.
    let engine = engine_with_prefix_cache(0);
    assert_eq!(texts(&engine, &prompts), fresh);
    assert_eq!(engine.recycled_kv_caches(), 2);
    // A prefix cache too small for two of these sequences: each new entry pushes the last one
    // out, and the third prompt starts in that let-go cache.
    let engine = engine_with_prefix_cache(48);
    assert_eq!(texts(&engine, &prompts), fresh);
    assert!(engine.recycled_kv_caches() >= 1);
}

#[test]
fn a_shared_prompt_prefix_is_reused_without_changing_the_text() {
    let prefix = "You are a helpful assistant who knows a lot about pottery, kilns and glazes. \
                  Answer in two sentences.\n";
    let prompts = [
        format!("{prefix}Question: what is a kiln?\nAnswer:"),
        format!("{prefix}Question: what is a glaze?\nAnswer:"),
        format!("{prefix}Question: what is a glaze?\nAnswer:"),
    ];
    let run = |cache_tokens: usize| {
        let engine = engine_with_prefix_cache(cache_tokens);
        let texts: Vec<String> = prompts
            .iter()
            .map(|p| collect(engine.submit(request(&engine, p, 24, &[])).unwrap()).0)
            .collect();
        (texts, engine.reused_prompt_tokens(), engine)
    };
    let (plain, plain_reused, _) = run(0);
    let (cached, reused, engine) = run(4096);
    assert_eq!(plain_reused, 0, "reuse is off");
    assert_eq!(
        cached, plain,
        "reusing a prefix must not change greedy text"
    );
    let ids = |p: &str| engine.model().encode_prompt(p).unwrap();
    let shared = ids(&prompts[0])
        .iter()
        .zip(&ids(&prompts[1]))
        .take_while(|(a, b)| a == b)
        .count();
    // The second prompt reuses the shared prefix; the third, identical to the second, reuses
    // all but its last token.
    assert_eq!(reused, shared + ids(&prompts[2]).len() - 1);
    assert!(shared > 20, "the prefix is {shared} tokens");
}

#[test]
fn prefix_cache_entries_expire_after_their_time_to_live() {
    let prompt = "You are a helpful assistant who knows a lot about pottery. What is a kiln?";
    let start = |ttl: Option<Duration>| {
        GenerationEngine::start(
            "smol",
            model(),
            GenerationConfig {
                prefix_cache_ttl: ttl,
                release_memory_after: Some(Duration::from_millis(10)),
                ..GenerationConfig::default()
            },
        )
    };
    // Kept for ever: the finished sequence's cache stays, idle or not.
    let forever = start(None);
    collect(forever.submit(request(&forever, prompt, 4, &[])).unwrap());
    wait_until("the kept cache is published", || {
        forever.prefix_cache_tokens() > 0
    });
    // With a short time-to-live the idle engine wakes and drops it on its own...
    let ttl = Duration::from_secs(1);
    let engine = start(Some(ttl));
    collect(engine.submit(request(&engine, prompt, 4, &[])).unwrap());
    let finished = Instant::now();
    wait_until("the kept cache is published", || {
        engine.prefix_cache_tokens() > 0
    });
    wait_until("the prefix cache is emptied", || {
        engine.prefix_cache_tokens() == 0
    });
    assert!(
        finished.elapsed() >= ttl - Duration::from_millis(50),
        "dropped {:?} after the request, before its time-to-live",
        finished.elapsed()
    );
    // ...and a later request still runs (and is cached again).
    let (text, _, n) = collect(engine.submit(request(&engine, prompt, 4, &[])).unwrap());
    assert_eq!(n, 4, "{text}");
    assert!(
        forever.prefix_cache_tokens() > 0,
        "the untimed cache was dropped"
    );
}

#[test]
fn streamed_text_is_the_decode_of_the_generated_tokens() {
    // A prompt whose greedy answer has multi-byte characters, spread over byte tokens.
    let prompt = "Translate 'good morning' into Japanese, Chinese, Korean and Russian:";
    let m = model();
    let max_tokens = 64;
    let ids = {
        let mut cache = m.model.new_cache(512);
        let mut logits = m
            .model
            .forward(&m.encode_prompt(prompt).unwrap(), &mut cache)
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..max_tokens {
            let t = kiln_core::sampling::argmax(&logits);
            if m.tokenizer.is_stop(t) {
                break;
            }
            ids.push(t);
            logits = m.model.forward(&[t], &mut cache).unwrap();
        }
        ids
    };
    let whole = m.tokenizer.decode(&ids, true).unwrap();
    assert!(
        whole.chars().filter(|c| !c.is_ascii()).count() > 5,
        "the reference text has multi-byte characters: {whole:?}"
    );
    assert!(
        (1..ids.len()).any(|n| m
            .tokenizer
            .decode(&ids[..n], true)
            .unwrap()
            .ends_with('\u{FFFD}')),
        "some character of the reference text spans tokens: {whole:?}"
    );
    let engine = GenerationEngine::start("smol", model(), GenerationConfig::default());
    let mut rx = engine
        .submit(request(&engine, prompt, max_tokens, &[]))
        .unwrap();
    let mut pieces = Vec::new();
    let (streamed, n) = loop {
        match rx.blocking_recv().expect("the engine finished the request") {
            GenerationEvent::Text(t) => pieces.push(t),
            GenerationEvent::Done {
                completion_tokens, ..
            } => break (pieces.concat(), completion_tokens),
            GenerationEvent::Error(e) => panic!("{e}"),
        }
    };
    assert_eq!(n, ids.len());
    assert_eq!(streamed, whole);
    // The stream holds incomplete characters back: no piece shows U+FFFD, except the end of
    // the last where the length limit cut a character (the whole decode then ends with it too).
    assert!(pieces.len() > 1, "the text came in pieces: {pieces:?}");
    let (last, rest) = pieces.split_last().expect("some text was streamed");
    assert!(
        rest.iter().all(|p| !p.contains('\u{FFFD}')),
        "no piece ends in half a character: {pieces:?}"
    );
    assert!(
        !last.trim_end_matches('\u{FFFD}').contains('\u{FFFD}'),
        "the last piece: {last:?}"
    );
    if last.ends_with('\u{FFFD}') {
        assert!(
            whole.ends_with('\u{FFFD}') && n == max_tokens,
            "a cut only at the length limit"
        );
    }
}

/// A prompt prefilled in chunks of 3 tokens (the chunks before the last skip the output layer)
/// gives the greedy text of the prompt prefilled whole, alone and in a batch.
#[test]
fn a_prompt_prefilled_in_small_chunks_gives_the_same_text() {
    let whole = GenerationEngine::start("smol", model(), GenerationConfig::default());
    let chunked = GenerationEngine::start(
        "smol",
        model(),
        GenerationConfig {
            prefill_chunk: 3,
            ..GenerationConfig::default()
        },
    );
    let prompts = [
        "The capital of France is",
        "Write a haiku about autumn leaves falling on a quiet river:",
        "def fibonacci(n):",
    ];
    let want: Vec<String> = prompts
        .iter()
        .map(|p| collect(whole.submit(request(&whole, p, 16, &[])).unwrap()).0)
        .collect();
    let (alone, together) = alone_and_together(&chunked, prompts.len(), |i| {
        request(&chunked, prompts[i], 16, &[])
    });
    assert_eq!(alone, want, "prefilled in chunks, alone");
    assert_eq!(together, want, "prefilled in chunks, in a batch");
}
