#!/usr/bin/env python3
"""Decode speed, side by side in one run: kiln (HTTP, streaming) vs llama.cpp (llama-cpp-python, in process).

A first, partial chat benchmark (issue 3 asks for more: transformers, 500-token prompts, 1/4/8/16
streams for every engine, memory). Run on a quiet machine from the repository root:

    scripts/reference/.venv-llama/bin/python bench/chat/decode.py

Needs target/release/kiln, models/SmolLM2-135M-Instruct (kiln fetch SmolLM2-135M-Instruct), and
llama-cpp-python built as in scripts/reference/make_llama_reference.py. Writes
bench/results/chat-decode-<date>.md.
"""
import datetime
import http.client
import json
import platform
import re
import statistics
import subprocess
import threading
import time

MODEL = "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The history of the printing press begins"
NEW_TOKENS = 128
RUNS = 5


def kiln_server():
    proc = subprocess.Popen(
        ["target/release/kiln", "serve", "--offline", "--port", "0", "--model", f"m={MODEL}"],
        stderr=subprocess.PIPE, text=True, env={"RUST_LOG": "info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    while True:
        line = proc.stderr.readline()
        m = re.search(r"listening on http://127.0.0.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
        if not line:
            raise SystemExit("kiln did not start")


def kiln_stream(port):
    """Streams one completion; returns (time to first token, decode tokens/s, tokens)."""
    body = json.dumps({"model": "m", "prompt": PROMPT, "max_tokens": NEW_TOKENS, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    first, tokens = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        elif chunk["choices"] and chunk["choices"][0]["text"] and first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    conn.close()
    return first - start, (tokens - 1) / (end - first), tokens


def kiln_aggregate(port, streams):
    results = [None] * streams
    def worker(i):
        results[i] = kiln_stream(port)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r[2] for r in results) / (time.perf_counter() - start)


def llama_cpp_run():
    import llama_cpp
    llm = llama_cpp.Llama(model_path=MODEL, n_ctx=1024, n_threads=2, verbose=False, seed=1)
    ttfts, rates = [], []
    for _ in range(RUNS + 1):
        start = time.perf_counter()
        first, n = None, 0
        for out in llm.create_completion(PROMPT, max_tokens=NEW_TOKENS, temperature=0, stream=True):
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        ttfts.append(first - start)
        rates.append((n - 1) / (end - first))
    return statistics.median(ttfts[1:]), statistics.median(rates[1:]), llama_cpp.__version__


def main():
    proc, port = kiln_server()
    try:
        kiln_stream(port)  # warm-up
        runs = [kiln_stream(port) for _ in range(RUNS)]
        k_ttft = statistics.median(r[0] for r in runs)
        k_rate = statistics.median(r[1] for r in runs)
        agg = {n: kiln_aggregate(port, n) for n in (1, 4, 8)}
    finally:
        proc.terminate()
        proc.wait()
    l_ttft, l_rate, l_version = llama_cpp_run()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    date = datetime.date.today().isoformat()
    md = f"""# Chat decode benchmark, {date} (partial)

Command: `scripts/reference/.venv-llama/bin/python bench/chat/decode.py`
Machine: {cpu}, 2 cores. Model: SmolLM2-135M-Instruct Q4_1 GGUF. Prompt: {PROMPT!r} ({NEW_TOKENS} new tokens, greedy), median of {RUNS} runs after a warm-up.
kiln: `kiln serve`, streamed over HTTP (includes HTTP/SSE). llama.cpp: llama-cpp-python {l_version} in process, 2 threads, built with GGML_NATIVE=OFF.

| | kiln | llama.cpp | kiln/llama.cpp |
|---|---|---|---|
| time to first token (short prompt) | {k_ttft*1e3:.1f} ms | {l_ttft*1e3:.1f} ms | {k_ttft/l_ttft:.2f}x |
| decode, one stream | {k_rate:.1f} tokens/s | {l_rate:.1f} tokens/s | {k_rate/l_rate:.2f}x |

kiln aggregate decode with concurrent streams (continuous batching): {', '.join(f'{n} streams: {v:.1f} tokens/s' for n, v in agg.items())}
(ratio 8 streams / 1 stream: {agg[8]/agg[1]:.2f}x).

Caveat: llama-cpp-python keeps the previous prompt's KV cache and reuses the common prefix, so its
time to first token for a repeated prompt measures little more than one token; kiln (no prefix
cache yet) prefills the whole prompt each time. Compare decode rates, not first-token times.

Not measured yet (issue 3 asks for them): Python transformers, a 500-token prompt, 16 streams, resident memory, Gemma 3.
"""
    path = f"bench/results/chat-decode-{date}.md"
    open(path, "w").write(md)
    print(md)


if __name__ == "__main__":
    main()
