#!/usr/bin/env python3
"""Two kiln builds side by side in one run (A/B), with the chat harness's kiln engine
(`engine_kiln.py`: HTTP + SSE streaming, prefix cache off): the runs alternate A, B, A, B, ...
so that drift of a shared machine hits both, and the table shows medians and B/A ratios.

Build the baseline elsewhere first, e.g.:
    git worktree add /tmp/wt-old <commit> && (cd /tmp/wt-old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p kiln-cli)
Then, from the repository root (any Python 3):
    python3 bench/chat/ab_kiln.py --a /tmp/old-target/release/kiln --b target/release/kiln \\
        --label-a 41fd96e --label-b HEAD --out bench/results/chat-batching-DATE.md
Greedy unless --temperature T (> 0) is given; then both sample with T and --top-p P (default 1.0),
a seed per request, as `bench/chat/run.py --temperature T --top-p P` does.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from common import add_sampling_args, check_sampling, sampling_argv, sampling_label

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {
    "SmolLM2-135M-Instruct Q4_1": "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    "Gemma 3 270M Q4_K_M": "models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
}


def run(kiln, model, sampling):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "engine_kiln.py"), "--model", model, "--kiln", kiln]
        + sampling_argv(*sampling),
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=HERE),
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{kiln} failed on {model}:\n{out.stderr[-2000:]}")


def metrics(r):
    agg = r["aggregate_tps"]
    return {
        "decode, one stream (tokens/s)": r["decode_tps"],
        **{f"aggregate, {n} streams (tokens/s)": agg[n] for n in ("1", "4", "8", "16")},
        "8 streams / one stream": agg["8"] / r["decode_tps"],
        "first token, ~20-token prompt (ms)": r["ttft_short_ms"],
        "first token, ~500-token prompt (ms)": r["ttft_long_ms"],
        "peak resident memory (MiB)": r["rss_peak_mib"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out")
    add_sampling_args(ap)
    args = ap.parse_args()
    check_sampling(ap, args)
    sampling = (args.temperature, args.top_p)
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    lines = [
        f"# kiln A/B, chat, {datetime.date.today().isoformat()}",
        "",
        f"Command: `python3 bench/chat/ab_kiln.py --label-a {args.label_a} --label-b {args.label_b} --runs {args.runs}"
        f"{''.join(' ' + x for x in sampling_argv(*sampling))}` (A: `{args.a}`, B: `{args.b}`).",
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()}. Runs alternate A, B; medians of {args.runs} each.",
        "Each run: `engine_kiln.py` (kiln serve, HTTP + SSE, prefix cache off), as in `bench/chat/run.py`;"
        f" decoding: {sampling_label(*sampling)}.",
    ]
    for name in args.models.split(","):
        model = MODELS[name]
        runs = {"a": [], "b": []}
        for i in range(args.runs):
            for side in ("a", "b"):
                print(f"{name}: {side} run {i + 1}", file=sys.stderr, flush=True)
                runs[side].append(metrics(run(getattr(args, side), model, sampling)))
        lines += ["", f"## {name}", "",
                  f"| | {args.label_a} | {args.label_b} | {args.label_b} / {args.label_a} | {args.label_b} runs |",
                  "|---|---|---|---|---|"]
        for key in runs["a"][0]:
            a = statistics.median(r[key] for r in runs["a"])
            b = statistics.median(r[key] for r in runs["b"])
            every = ", ".join(f"{r[key]:.1f}" for r in runs["b"])
            lines.append(f"| {key} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {every} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
