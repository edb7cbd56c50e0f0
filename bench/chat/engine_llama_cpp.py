"""llama.cpp through llama-cpp-python, in process, 2 threads (scripts/reference/.venv-llama).

llama-cpp-python serves one request at a time (no continuous batching), so N concurrent streams
take N times as long as one: the aggregate rate is measured by running the N completions one
after another, which is what its server would do with them.
"""
import argparse
import statistics
import time

import llama_cpp

from common import (NEW_TOKENS, RUNS, STREAM_TOKENS, STREAMS, decode_prompt, emit, long_prompt,
                    rss_mib, short_prompt)


def cpu_features():
    """The instruction sets this llama.cpp build uses, from its own system info."""
    info = llama_cpp.llama_print_system_info()
    info = info.decode() if isinstance(info, bytes) else str(info)
    parts = (p.split("=") for p in info.split("|") if "=" in p)
    return " ".join(k.split()[-1] for k, v in parts if v.strip() == "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=2048, n_batch=512, n_threads=2, n_threads_batch=2,
                          verbose=False, seed=1)
    load_s = time.perf_counter() - t0
    rss_loaded, _ = rss_mib()

    def run(prompt, max_tokens):
        llm.reset()  # no reuse of the previous prompt's KV cache
        start = time.perf_counter()
        first, n = None, 0
        for _ in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0, stream=True):
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        return first - start, (n - 1) / max(end - first, 1e-9), n

    run(short_prompt(0), 8)
    ttft_short = statistics.median(run(short_prompt(i + 1), 1)[0] for i in range(RUNS))
    ttft_long = statistics.median(run(long_prompt(i + 1), 1)[0] for i in range(RUNS))
    decode = [run(decode_prompt(i + 1), NEW_TOKENS) for i in range(RUNS)]
    agg = {}
    for n in STREAMS:
        agg_rates = []
        for k in range(RUNS):  # medians of RUNS runs, each with its own prompts
            start = time.perf_counter()
            tokens = sum(run(decode_prompt(100 * n + 10_000 * k + i), STREAM_TOKENS)[2] for i in range(n))
            agg_rates.append(tokens / (time.perf_counter() - start))
        agg[n] = statistics.median(agg_rates)
    _, rss_peak = rss_mib()
    emit({
        "engine": "llama.cpp", "version": llama_cpp.__version__, "load_s": load_s,
        "ttft_short_ms": ttft_short * 1e3, "ttft_long_ms": ttft_long * 1e3,
        "decode_tps": statistics.median(d[1] for d in decode), "decode_tokens": [d[2] for d in decode],
        "aggregate_tps": agg, "rss_loaded_mib": rss_loaded, "rss_peak_mib": rss_peak,
        "notes": f"llama-cpp-python in process, 2 threads, built from source (CPU features: {cpu_features()}); streams served one after another",
    })


if __name__ == "__main__":
    main()
