"""llama.cpp through llama-cpp-python, in process, 2 threads (scripts/reference/.venv-llama).

llama-cpp-python serves one request at a time (no continuous batching), so N concurrent streams
take N times as long as one: the aggregate rate is measured by running the N completions one
after another, which is what its server would do with them.

With --temperature > 0 it samples as kiln does: temperature, then top-p on the tempered
probabilities, every other cut off (top-k 0, min-p 0, typical-p 1, no penalties), a seed per
request. llama-cpp-python's own chain applies top-p before the temperature; when top-p < 1 the
engine puts the temperature first (see `tempered_top_p`).
"""
import argparse
import statistics
import time

import llama_cpp
import llama_cpp._internals

from common import (NEW_TOKENS, RUNS, STREAM_TOKENS, STREAMS, add_sampling_args, check_sampling,
                    decode_prompt, emit, long_prompt, rss_mib, sampling_label, short_prompt)


def cpu_features():
    """The instruction sets this llama.cpp build uses, from its own system info."""
    info = llama_cpp.llama_print_system_info()
    info = info.decode() if isinstance(info, bytes) else str(info)
    parts = (p.split("=") for p in info.split("|") if "=" in p)
    return " ".join(k.split()[-1] for k, v in parts if v.strip() == "1")


def tempered_top_p(llm):
    """A replacement for `llm._init_sampler` (llama-cpp-python 0.3.x; `generate` calls it after
    `create_completion` has set the request's seed): the chain temperature, top-p, draw, so that
    top-p cuts the tempered distribution, as in kiln and transformers. llama-cpp-python's chain
    is penalties, top-k, typical-p, top-p, min-p, temperature, draw; with the neutral values
    passed here the two differ only in what top-p sees."""
    def init_sampler(temp, top_p, **_):
        sampler = llama_cpp._internals.LlamaSampler()
        sampler.add_temp(temp)
        sampler.add_top_p(top_p, 1)
        sampler.add_dist(llm._seed)
        return sampler
    return init_sampler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    add_sampling_args(ap)
    a = ap.parse_args()
    check_sampling(ap, a)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=2048, n_batch=512, n_threads=2, n_threads_batch=2,
                          verbose=False, seed=1)
    load_s = time.perf_counter() - t0
    rss_loaded, _ = rss_mib()
    if a.temperature > 0 and a.top_p < 1.0:
        llm._init_sampler = tempered_top_p(llm)

    def run(prompt, max_tokens, seed=1):
        llm.reset()  # no reuse of the previous prompt's KV cache
        if a.temperature == 0:  # greedy, as before --temperature
            sampling = dict(temperature=0)
        else:  # nothing but temperature and top-p cuts (the defaults are top_k=40, min_p=0.05)
            sampling = dict(temperature=a.temperature, top_p=a.top_p, top_k=0, min_p=0.0, typical_p=1.0,
                            repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, seed=seed)
        start = time.perf_counter()
        first, n = None, 0
        for _ in llm.create_completion(prompt, max_tokens=max_tokens, stream=True, **sampling):
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
            tokens = sum(run(decode_prompt(100 * n + 10_000 * k + i), STREAM_TOKENS, seed=1 + i)[2]
                         for i in range(n))
            agg_rates.append(tokens / (time.perf_counter() - start))
        agg[n] = statistics.median(agg_rates)
    _, rss_peak = rss_mib()
    emit({
        "engine": "llama.cpp", "version": llama_cpp.__version__, "load_s": load_s,
        "ttft_short_ms": ttft_short * 1e3, "ttft_long_ms": ttft_long * 1e3,
        "decode_tps": statistics.median(d[1] for d in decode), "decode_tokens": [d[2] for d in decode],
        "aggregate_tps": agg, "rss_loaded_mib": rss_loaded, "rss_peak_mib": rss_peak,
        "sampling": sampling_label(a.temperature, a.top_p),
        "notes": f"llama-cpp-python in process, 2 threads, built from source (CPU features: {cpu_features()}); streams served one after another"
                 + ("; sampler chain temperature, top-p, draw (top-p after the temperature, as kiln)"
                    if a.temperature > 0 and a.top_p < 1.0 else ""),
    })


if __name__ == "__main__":
    main()
