//! The `kiln` binary end to end: `embed`, `fetch --list`, and `serve` answering real HTTP,
//! including parity with sentence-transformers through the HTTP API on the real model.

use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("RUST_LOG", "info").env("NO_COLOR", "1");
    c
}

#[test]
fn embed_prints_json_vectors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let out = kiln()
        .args(["embed", "--model"])
        .arg(dir.path())
        .args(["hello world", "the cat"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dimension"], 32);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["tokens"], 4);
    assert_eq!(data[1]["embedding"].as_array().unwrap().len(), 32);
}

#[test]
fn bad_model_paths_fail_with_a_clear_message() {
    let out = kiln()
        .args(["embed", "--model", "./no/such/dir", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/dir"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let out = kiln()
        .args(["embed", "--model"])
        .arg(dir.path())
        .arg("x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn fetch_lists_the_known_models() {
    let out = kiln().args(["fetch", "--list"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("all-MiniLM-L6-v2"));
}

/// A running `kiln serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path) -> Server {
    serve_models(&[model])
}

fn serve_models(models: &[&Path]) -> Server {
    serve_models_with(models, &[])
}

fn serve_models_with(models: &[&Path], extra: &[&str]) -> Server {
    let mut cmd = kiln();
    cmd.args(["serve", "--port", "0", "--offline"]).args(extra);
    for m in models {
        cmd.arg("--model").arg(m);
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("kiln serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, port }
}

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let payload = resp.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(payload).unwrap_or(Value::String(payload.into())),
    )
}

#[test]
fn serve_answers_http_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let mut server = serve(dir.path());
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (status, models) = http(server.port, "GET", "/v1/models", None);
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], name.as_str());
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/embeddings",
        Some(&json!({"model": name, "input": "hello"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 32);
    let (status, _) = http(
        server.port,
        "POST",
        "/v1/embeddings",
        Some(&json!({"model": "other", "input": "hello"})),
    );
    assert_eq!(status, 404);
    // SIGTERM: a clean exit with status 0.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

fn real_model() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real model is missing: run `cargo run --release -p kiln-cli -- fetch` (or scripts/test.sh)"
    );
    dir
}

#[test]
fn http_embeddings_match_sentence_transformers() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../kiln-core/tests/data/minilm_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let server = serve(&real_model());
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/embeddings",
        Some(&json!({"model": "all-MiniLM-L6-v2", "input": texts})),
    );
    assert_eq!(status, 200, "{body}");
    let expected_tokens: u64 = items
        .iter()
        .map(|i| i["num_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"], expected_tokens);
    for (item, got) in items.iter().zip(body["data"].as_array().unwrap()) {
        let g: Vec<f64> = got["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let e: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let dot: f64 = g.iter().zip(&e).map(|(a, b)| a * b).sum();
        let cos = dot
            / (g.iter().map(|a| a * a).sum::<f64>().sqrt()
                * e.iter().map(|a| a * a).sum::<f64>().sqrt());
        let diff = g
            .iter()
            .zip(&e)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            cos >= 0.99999 && diff <= 1e-4,
            "{:?}: cosine {cos}, max diff {diff}",
            item["text"]
        );
    }
    // The TEI route gives the same vectors.
    let (status, tei) = http(
        server.port,
        "POST",
        "/embed",
        Some(&json!({"inputs": texts[0]})),
    );
    assert_eq!(status, 200);
    let first: Vec<f64> = items[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let got: Vec<f64> = tei[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(got.iter().zip(&first).all(|(a, b)| (a - b).abs() <= 1e-4));
}

fn core_fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-core/tests/data")
        .join(rel)
}

#[test]
fn inspect_reports_gguf_metadata_types_and_parameters() {
    let out = kiln()
        .args(["inspect", "--tensors"])
        .arg(core_fixture("gguf/quants.gguf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "GGUF v3",
        "arch:       llama",
        "parameters: 5632",
        "Q4_K",
        "Q6_K",
        "test.string = \"héllo ✓\"",
        "t.q5_1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn inspect_reads_safetensors_and_pytorch_checkpoints_and_refuses_hostile_ones() {
    for file in ["pickle/tiny_bert.safetensors", "pickle/tiny_bert.bin"] {
        let out = kiln()
            .arg("inspect")
            .arg(core_fixture(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("tensors:    37"),
            "{file}"
        );
    }
    let out = kiln()
        .arg("inspect")
        .arg(core_fixture("pickle/hostile_os_system.bin"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused to load"));
}

fn real_chat_model() -> PathBuf {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        f.is_file(),
        "the real chat model is missing: run `cargo run --release -p kiln-cli -- fetch SmolLM2-135M-Instruct` (or scripts/test.sh)"
    );
    f
}

fn chat_body(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "system", "content": "You are a concise assistant."}, {"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 24,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[test]
fn chat_completions_answer_stream_and_batch_concurrent_requests_identically() {
    let server = serve_models(&[&real_chat_model(), &real_model()]);
    let port = server.port;
    let (status, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(&chat_body("What is the capital of France?", json!({}))),
    );
    assert_eq!(status, 200, "{body}");
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(answer.contains("Paris"), "{answer}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // Streaming gives the same text, then a finish chunk, a usage chunk and [DONE].
    let (status, raw) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(&chat_body(
            "What is the capital of France?",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        )),
    );
    assert_eq!(status, 200);
    let raw = raw.as_str().unwrap();
    let events: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, answer);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );

    // Greedy answers are the same whether requests run alone or batched together.
    let questions = [
        "Name a primary color.",
        "What is 2 + 2?",
        "Say hello in French.",
    ];
    let alone: Vec<String> = questions
        .iter()
        .map(|q| {
            http(
                port,
                "POST",
                "/v1/chat/completions",
                Some(&chat_body(q, json!({}))),
            )
            .1["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                s.spawn(move || {
                    http(
                        port,
                        "POST",
                        "/v1/chat/completions",
                        Some(&chat_body(q, json!({}))),
                    )
                    .1["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);

    // Completions, stop strings, and the same seed giving the same sample.
    let completion = |extra: Value| {
        let mut b = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        http(port, "POST", "/v1/completions", Some(&b))
    };
    let (status, c) = completion(json!({}));
    assert_eq!(status, 200, "{c}");
    let text = c["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(" Paris"), "{text}");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(c["usage"]["completion_tokens"], 12);
    let (_, stopped) = completion(json!({"stop": ["."]}));
    assert_eq!(stopped["choices"][0]["text"], " Paris");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let sample = |seed: u64| {
        completion(json!({"temperature": 1.2, "seed": seed})).1["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(sample(7), sample(7));
}

#[test]
fn chat_requests_with_bad_fields_get_openai_errors() {
    let server = serve_models(&[&real_chat_model(), &real_model()]);
    let port = server.port;
    let cases = [
        (
            json!({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": []}),
            400,
            "messages",
        ),
        (
            json!({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "wizard", "content": "hi"}]}),
            400,
            "wizard",
        ),
        (
            json!({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.5}),
            400,
            "temprature",
        ),
        (
            json!({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
            400,
            "temperature",
        ),
        (
            json!({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "hi"}], "n": 2}),
            400,
            "n = 1",
        ),
        (
            json!({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
            400,
            "--max-completion-tokens",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "embedding model",
        ),
        (
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "does not exist",
        ),
    ];
    for (body, status, needle) in cases {
        let (s, e) = http(port, "POST", "/v1/chat/completions", Some(&body));
        assert_eq!(s, status, "{body} -> {e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // An over-long prompt names the limit.
    let long = "word ".repeat(9000);
    let (s, e) = http(
        port,
        "POST",
        "/v1/completions",
        Some(&json!({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": long})),
    );
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("at most"),
        "{e}"
    );
    let (s, _) = http(
        port,
        "POST",
        "/v1/embeddings",
        Some(&json!({"model": "SmolLM2-135M-Instruct.Q4_1", "input": "x"})),
    );
    assert_eq!(s, 400);
}

#[test]
fn generate_runs_a_safetensors_decoder_directory() {
    // The tiny transformers-made Llama of kiln-core's tests: a directory with config.json
    // naming LlamaForCausalLM is served as a chat model.
    let dir = core_fixture("tiny-llama");
    let out = kiln()
        .args([
            "generate",
            "--temperature",
            "0",
            "--max-tokens",
            "6",
            "--stats",
            "-m",
        ])
        .arg(&dir)
        .arg("The kiln was")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("9 prompt tokens"), "{stderr}");
    assert!(stderr.contains("6 tokens in"), "{stderr}");
}

#[test]
fn bench_measures_a_chat_model_and_refuses_what_it_cannot_measure() {
    let dir = core_fixture("tiny-llama");
    let out = kiln()
        .args([
            "bench",
            "--prompt-tokens",
            "16",
            "--tokens",
            "8",
            "--stream-tokens",
            "5",
            "--streams",
            "1,3",
            "--runs",
            "2",
            "--json",
            "-m",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["model"], "tiny-llama");
    assert_eq!(
        report["prompt_tokens"], 16,
        "the prompt has the length asked for"
    );
    assert_eq!(report["runs"], 2);
    assert_eq!(
        (&report["temperature"], &report["top_p"]),
        (&json!(0.0), &json!(1.0))
    );
    assert_eq!(
        (
            &report["tokens"],
            &report["stream_tokens"],
            &report["decode_prompt_tokens"]
        ),
        (&json!(8), &json!(5), &json!(8))
    );
    // Greedy requests of the tiny model run to `--tokens`, run after run.
    assert_eq!(report["decode_tokens"], json!([8, 8]));
    assert!(report["first_token_ms"].as_f64().unwrap() > 0.0);
    assert!(report["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let aggregate = report["aggregate_tokens_per_s"].as_array().unwrap();
    let streams: Vec<u64> = aggregate
        .iter()
        .map(|a| a["streams"].as_u64().unwrap())
        .collect();
    assert_eq!(streams, [1, 3]);
    assert!(aggregate
        .iter()
        .all(|a| a["tokens_per_s"].as_f64().unwrap() > 0.0));

    // The same measurements as lines for a person, of sampled requests.
    let out = kiln()
        .args([
            "bench",
            "--prompt-tokens",
            "12",
            "--tokens",
            "4",
            "--runs",
            "1",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "-m",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "tiny-llama on ",
        "temperature 0.8, top-p 0.9, medians of 1 runs",
        "first token,    12-token prompt",
        "decode, one stream",
        "tokens/s (4 tokens)",
        "aggregate, 64 tokens per stream:",
        "    8 streams",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }

    // An embedding model, a zero stream count, a temperature out of range and a prompt past
    // the context are clear errors.
    let bert = tempfile::tempdir().unwrap();
    write_tiny_bert(bert.path(), &TinyBertSpec::default()).unwrap();
    for (args, want) in [
        (
            vec!["-m", bert.path().to_str().unwrap()],
            "is an embedding model",
        ),
        (
            vec!["-m", dir.to_str().unwrap(), "--streams", "1,0"],
            "--streams",
        ),
        (
            vec!["-m", dir.to_str().unwrap(), "--temperature", "3"],
            "temperature must be between 0 and 2",
        ),
        (
            vec!["-m", dir.to_str().unwrap(), "--top-p", "0.5"],
            "--top-p needs a --temperature above 0",
        ),
        (
            vec!["-m", dir.to_str().unwrap(), "--prompt-tokens", "100000"],
            "exceed the model's context",
        ),
        (
            vec![
                "-m",
                dir.to_str().unwrap(),
                "--tokens",
                "18446744073709551615",
            ],
            "exceed the model's context",
        ),
    ] {
        let out = kiln().arg("bench").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// The value of the Prometheus sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[test]
fn chat_metrics_count_tokens_first_tokens_and_prefix_reuse() {
    let server = serve_models(&[&real_chat_model()]);
    let port = server.port;
    let prompt = "A long shared preamble about kilns, glazes and the craft of pottery, repeated so \
                  that a second request can reuse it from the prefix cache. The capital of France is";
    let mut generated = 0;
    for _ in 0..2 {
        let (status, c) = http(
            port,
            "POST",
            "/v1/completions",
            Some(
                &json!({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": prompt, "max_tokens": 5, "temperature": 0}),
            ),
        );
        assert_eq!(status, 200, "{c}");
        generated += c["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let (status, m) = http(port, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let m = m.as_str().unwrap().to_string();
    let l = "{model=\"SmolLM2-135M-Instruct.Q4_1\"}";
    assert_eq!(
        sample(&m, &format!("kiln_generated_tokens_total{l}")),
        generated as f64
    );
    assert_eq!(
        sample(&m, &format!("kiln_time_to_first_token_seconds_count{l}")),
        2.0
    );
    assert_eq!(sample(&m, &format!("kiln_running_sequences{l}")), 0.0);
    // The second request reused all but the last prompt token of the first.
    assert!(
        sample(&m, &format!("kiln_prefix_cache_reused_tokens_total{l}")) > 20.0,
        "{m}"
    );
    // The finished sequences' caches are kept for the next prompt (until --prefix-cache-ttl).
    assert!(
        sample(&m, &format!("kiln_prefix_cache_tokens{l}")) > 20.0,
        "{m}"
    );
}

#[test]
fn sigterm_mid_stream_lets_the_stream_finish_then_exits_cleanly() {
    let mut server = serve_models(&[&real_chat_model()]);
    let port = server.port;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "Once upon a time", "max_tokens": 120,
                      "temperature": 0, "stream": true, "stream_options": {"include_usage": true}})
    .to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    // Wait for the first text chunk, then send SIGTERM mid-stream.
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        if line.starts_with("data: {")
            && line.contains("\"text\":\"")
            && !line.contains("\"text\":\"\"")
        {
            break;
        }
    }
    assert!(Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // The accepted stream still runs to its end: all 120 tokens, the usage chunk and [DONE].
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(rest.contains("\"completion_tokens\":120"), "{rest}");
    assert!(rest.contains("data: [DONE]"), "{rest}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    // Nothing listens any more.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn sigterm_past_the_shutdown_timeout_ends_open_streams_with_an_error_event() {
    let mut server = serve_models_with(&[&real_chat_model()], &["--shutdown-timeout", "0.5"]);
    let port = server.port;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "Once upon a time", "max_tokens": 3000,
                      "temperature": 0, "stream": true})
    .to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        if line.starts_with("data: {")
            && line.contains("\"text\":\"")
            && !line.contains("\"text\":\"\"")
        {
            break;
        }
    }
    let started = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // The stream cannot finish 3000 tokens in 0.5 s: it ends with an error event, then [DONE].
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"code\":\"shutting_down\""), "{rest}");
    assert!(rest.contains("data: [DONE]"), "{rest}");
    assert!(!rest.contains("\"finish_reason\":\"length\""), "{rest}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
