"""Python transformers on the same GGUF (scripts/reference/.venv: torch, transformers, gguf,
accelerate). transformers dequantizes GGUF weights to float32 at load; 2 threads; greedy
`generate` (with --temperature > 0: sampling with that temperature and --top-p, top-k off, torch
seeded once). N concurrent streams are one batched `generate` of N prompts (left padding), its
best equivalent of continuous batching.
"""
import argparse
import os
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import (NEW_TOKENS, RUNS, STREAM_TOKENS, STREAMS, add_sampling_args, check_sampling,
                    decode_prompt, emit, long_prompt, rss_mib, sampling_label, short_prompt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    add_sampling_args(ap)
    a = ap.parse_args()
    check_sampling(ap, a)
    torch.set_num_threads(2)
    d, f = os.path.dirname(a.model), os.path.basename(a.model)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    rss_loaded, _ = rss_mib()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if a.temperature == 0:  # greedy, as before --temperature
        sampling = dict(do_sample=False)
    else:  # temperature, then top-p; top_k=0 turns off transformers' default top-k of 50
        sampling = dict(do_sample=True, temperature=a.temperature, top_p=a.top_p, top_k=0)
        torch.manual_seed(1)

    def gen(prompts, new):
        enc = tok(prompts, return_tensors="pt", padding=True)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, **sampling,
                                 pad_token_id=tok.pad_token_id)
        return time.perf_counter() - start, (out.shape[1] - enc["input_ids"].shape[1]) * len(prompts)

    gen([short_prompt(0)], 8)
    ttft_short = statistics.median(gen([short_prompt(i + 1)], 1)[0] for i in range(RUNS))
    ttft_long = statistics.median(gen([long_prompt(i + 1)], 1)[0] for i in range(RUNS))
    rates = []
    for i in range(RUNS):
        total, n = gen([decode_prompt(i + 1)], NEW_TOKENS)
        first = gen([decode_prompt(i + 1)], 1)[0]
        rates.append((n - 1) / (total - first))
    agg = {}
    for n in STREAMS:
        agg_rates = []
        for k in range(RUNS):  # medians of RUNS runs, each with its own prompts
            total, tokens = gen([decode_prompt(100 * n + 10_000 * k + i) for i in range(n)], STREAM_TOKENS)
            agg_rates.append(tokens / total)
        agg[n] = statistics.median(agg_rates)
    _, rss_peak = rss_mib()
    emit({
        "engine": "transformers", "version": transformers.__version__, "torch": torch.__version__,
        "load_s": load_s, "ttft_short_ms": ttft_short * 1e3, "ttft_long_ms": ttft_long * 1e3,
        "decode_tps": statistics.median(rates), "aggregate_tps": agg,
        "rss_loaded_mib": rss_loaded, "rss_peak_mib": rss_peak, "sampling": sampling_label(a.temperature, a.top_p),
        "notes": "float32 (GGUF dequantized by transformers), 2 threads, "
                 + ("greedy generate" if a.temperature == 0 else "sampling generate (top-k off)")
                 + "; N streams = one batched generate",
    })


if __name__ == "__main__":
    main()
