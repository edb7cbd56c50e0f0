"""kiln: `kiln serve` over HTTP, streamed completions (`/v1/completions`, SSE). Any Python 3."""
import argparse
import http.client
import json
import re
import statistics
import subprocess
import threading
import time

from common import (NEW_TOKENS, RUNS, STREAM_TOKENS, STREAMS, add_sampling_args, check_sampling,
                    decode_prompt, emit, long_prompt, rss_mib, sampling_label, short_prompt)

# --temperature and --top-p (main sets them); temperature 0 is greedy.
TEMPERATURE, TOP_P = 0.0, 1.0


def start(kiln, model):
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [kiln, "serve", "--offline", "--port", "0", "--prefix-cache-tokens", "0", "--model", f"m={model}"],
        stderr=subprocess.PIPE, text=True, env={"RUST_LOG": "info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    while True:
        line = proc.stderr.readline()
        m = re.search(r"listening on http://127.0.0.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1)), time.perf_counter() - t0
        if not line:
            raise SystemExit("kiln did not start")


def stream(port, prompt, max_tokens, seed=1):
    """(time to first token, decode tokens/s after it, tokens). `seed` is sent only when sampling."""
    request = {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
               "stream": True, "stream_options": {"include_usage": True}}
    if TEMPERATURE > 0:  # greedy requests stay exactly as they were
        request.update(temperature=TEMPERATURE, top_p=TOP_P, seed=seed)
    body = json.dumps(request)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
    first, tokens = None, 0
    for raw in conn.getresponse():
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
    if first is None:  # no text at all: when sampling, the only token drawn may end the text
        first = end
    # No rate without an interval after the first token (one token, or none).
    rate = (tokens - 1) / (end - first) if tokens > 1 and end > first else None
    return first - start, rate, tokens


def aggregate(port, n, base):
    out = [None] * n
    def worker(i):
        out[i] = stream(port, decode_prompt(base + i), STREAM_TOKENS, seed=1 + i)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r[2] for r in out) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--model", required=True)
    add_sampling_args(ap)
    a = ap.parse_args()
    check_sampling(ap, a)
    global TEMPERATURE, TOP_P
    TEMPERATURE, TOP_P = a.temperature, a.top_p
    proc, port, load_s = start(a.kiln, a.model)
    try:
        rss_loaded, _ = rss_mib(proc.pid)
        stream(port, short_prompt(0), 8)  # warm-up
        ttft_short = statistics.median(stream(port, short_prompt(i + 1), 1)[0] for i in range(RUNS))
        ttft_long = statistics.median(stream(port, long_prompt(i + 1), 1)[0] for i in range(RUNS))
        # Each rate counts the tokens actually generated (a model may end a text early, as
        # llama.cpp's runs may; the counts are recorded).
        decode = [stream(port, decode_prompt(i + 1), NEW_TOKENS) for i in range(RUNS)]
        # Medians of RUNS runs, each with its own prompts.
        agg = {n: statistics.median(aggregate(port, n, 100 * n + 10_000 * k) for k in range(RUNS))
               for n in STREAMS}
        rss_now, rss_peak = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    emit({
        "engine": "kiln", "load_s": load_s, "ttft_short_ms": ttft_short * 1e3, "ttft_long_ms": ttft_long * 1e3,
        "decode_tps": statistics.median(d[1] for d in decode if d[1] is not None),
        "decode_tokens": [d[2] for d in decode],
        "aggregate_tps": agg,
        "rss_loaded_mib": rss_loaded, "rss_peak_mib": rss_peak,
        "sampling": sampling_label(a.temperature, a.top_p),
        "notes": "kiln serve, HTTP + SSE streaming, continuous batching, prefix cache off",
    })


if __name__ == "__main__":
    main()
