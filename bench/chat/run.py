#!/usr/bin/env python3
"""The chat benchmark, side by side in one run: kiln vs llama.cpp (llama-cpp-python) vs Python
transformers, on SmolLM2-135M-Instruct (Q4_1) and Gemma 3 270M (Q4_K_M), the same GGUF files.

For each model and engine: load time, time to first token for a ~20-token and a ~500-token
prompt (each run opens with different words, so no engine reuses a cached prefix; kiln's prefix
cache is off), single-stream decode tokens/s (128 tokens, greedy by default), aggregate tokens/s at 1, 4, 8
and 16 concurrent streams (64 tokens each; the median of three runs), and resident memory. Each engine runs in its own
process (and virtual environment), one after another, on an otherwise idle machine.

Every engine decodes greedily unless --temperature T (> 0) is given: then all three sample with
temperature T and nucleus --top-p P (default 1.0), nothing else cut (top-k and min-p off, no
penalties), each request with its own seed; the results name the setting.

Set-up (once; see bench/README.md):
    cargo build --release -p kiln-cli
    cargo run --release -p kiln-cli -- fetch SmolLM2-135M-Instruct && cargo run --release -p kiln-cli -- fetch gemma-3-270m
    # llama-cpp-python: scripts/reference/.venv-llama (see scripts/reference/make_llama_reference.py)
    # transformers: scripts/reference/.venv with torch, transformers, gguf, accelerate
    # chart: bench/.venv (matplotlib)

Run from the repository root:
    bench/.venv/bin/python bench/chat/run.py            # writes bench/results/chat-<date>.{md,json,png}
    bench/.venv/bin/python bench/chat/run.py --quick    # a fast check of the harness (numbers meaningless)
    bench/.venv/bin/python bench/chat/run.py --tag b    # a second run on one day: chat-<date>-b.*
    bench/.venv/bin/python bench/chat/run.py --temperature 0.7 --top-p 0.9 --tag t07   # sampling
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

from common import add_sampling_args, check_sampling, sampling_argv, sampling_label

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {
    "SmolLM2-135M-Instruct Q4_1": "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    "Gemma 3 270M Q4_K_M": "models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
}
ENGINES = {
    "kiln": ("scripts/reference/.venv-llama/bin/python", "engine_kiln.py"),
    "llama.cpp": ("scripts/reference/.venv-llama/bin/python", "engine_llama_cpp.py"),
    "transformers": ("scripts/reference/.venv/bin/python", "engine_transformers.py"),
}


def run_engine(name, model, kiln, quick, sampling):
    python, script = ENGINES[name]
    cmd = [python, os.path.join(HERE, script), "--model", model]
    if name == "kiln":
        cmd += ["--kiln", kiln]
    cmd += sampling_argv(*sampling)
    env = dict(os.environ, PYTHONPATH=HERE, **({"KILN_BENCH_QUICK": "1"} if quick else {}))
    print("running", name, "on", model, file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"engine": name, "error": (out.stderr or out.stdout)[-2000:]}


def fmt(v, unit=""):
    return "n/a" if v is None else f"{v:.1f}{unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--engines", default="kiln,llama.cpp,transformers")
    ap.add_argument("--tag", default="", help="appended to the results' file names (a second run on one day)")
    add_sampling_args(ap)
    a = ap.parse_args()
    check_sampling(ap, a)
    sampling = (a.temperature, a.top_p)
    label = sampling_label(*sampling)
    engines = a.engines.split(",")
    # The tree as the run starts (a commit made during the run must not relabel it). A binary
    # built from a tree with uncommitted changes, tracked or new, is not that commit's: say so.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    if dirty:
        commit += " plus uncommitted changes"
    results = {m: {e: run_engine(e, path, a.kiln, a.quick, sampling) for e in engines} for m, path in MODELS.items()}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    date = datetime.date.today().isoformat()
    lines = [
        f"# Chat benchmark, {date}" + (" (--quick: harness check, not a measurement)" if a.quick else ""),
        "",
        f"Command: `bench/.venv/bin/python bench/chat/run.py{' --quick' if a.quick else ''}"
        f"{' --tag ' + a.tag if a.tag else ''}{''.join(' ' + x for x in sampling_argv(*sampling))}`"
        f" (kiln `{a.kiln}`, built from {commit}). Machine: {cpu}, {os.cpu_count()} cores, otherwise idle. "
        "Each engine runs alone, with 2 threads; medians of 3 runs after a warm-up.",
        "",
        "Decoding: greedy (temperature 0), every engine." if a.temperature == 0 else
        f"Decoding: {label}, every engine (top-k and min-p off, no penalties; a seed per request"
        " in kiln and llama.cpp, one torch seed in transformers).",
        "",
        "Targets (issue 3): single-stream decode >= 1.0x llama.cpp; aggregate at 8 streams >= 3x kiln's "
        "single stream; >= 10x faster than Python transformers.",
    ]
    for m, r in results.items():
        k = r.get("kiln", {})
        lines += ["", f"## {m}", "", "| | " + " | ".join(engines) + " | kiln / llama.cpp | kiln / transformers |",
                  "|---|" + "---|" * (len(engines) + 2)]

        def row(label, key, unit, higher_better, sub=None):
            vals = []
            for e in engines:
                v = r.get(e, {}).get(key)
                if sub is not None and v is not None:
                    v = v.get(str(sub), v.get(sub))
                vals.append(v)
            kv = vals[engines.index("kiln")] if "kiln" in engines else None

            def ratio(other):
                if other not in engines or kv is None or vals[engines.index(other)] is None:
                    return "n/a"
                o = vals[engines.index(other)]
                x = (o / kv) if not higher_better else (kv / o)
                if unit == " MiB":
                    return f"{x:.2f}x {'less' if x >= 1 else 'more'}"
                return f"{x:.2f}x {'faster' if x >= 1 else 'slower'}"
            lines.append(f"| {label} | " + " | ".join(fmt(v, unit) for v in vals) +
                         f" | {ratio('llama.cpp')} | {ratio('transformers')} |")

        row("model load", "load_s", " s", False)
        row("first token, ~20-token prompt", "ttft_short_ms", " ms", False)
        row("first token, ~500-token prompt", "ttft_long_ms", " ms", False)
        row("decode, one stream (tokens/s)", "decode_tps", "", True)
        for n in (1, 4, 8, 16):
            if all(str(n) in (r.get(e, {}).get("aggregate_tps") or {}) or n in (r.get(e, {}).get("aggregate_tps") or {}) for e in engines):
                row(f"aggregate, {n} streams (tokens/s)", "aggregate_tps", "", True, sub=n)
        row("resident memory after load", "rss_loaded_mib", " MiB", False)
        row("peak resident memory", "rss_peak_mib", " MiB", False)
        agg = k.get("aggregate_tps") or {}
        if "8" in agg and "1" in agg:
            lines.append("")
            lines.append(f"kiln at 8 streams / kiln at 1 stream: {agg['8'] / agg['1']:.2f}x.")
        for e in engines:
            if "error" in r.get(e, {}):
                lines += ["", f"{e} failed: ```{r[e]['error'][-800:]}```"]
            elif r.get(e, {}).get("notes"):
                lines.append(f"- {e}: {r[e]['notes']}" + (f" ({r[e].get('version')})" if r[e].get("version") else ""))
    md = "\n".join(lines) + "\n"
    suffix = ("-" + a.tag if a.tag else "") + ("-quick" if a.quick else "")
    base = f"bench/results/chat-{date}{suffix}"
    with open(base + ".json", "w") as f:
        json.dump({"date": date, "cpu": cpu, "sampling": label, "temperature": a.temperature, "top_p": a.top_p,
                   "results": results}, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
        for ax, (m, r) in zip(axes if len(results) > 1 else [axes], results.items()):
            for e in engines:
                agg = r.get(e, {}).get("aggregate_tps") or {}
                xs = sorted(int(x) for x in agg)
                ax.plot(xs, [agg[str(x)] if str(x) in agg else agg[x] for x in xs], marker="o", label=e)
            ax.set_title(m)
            ax.set_xlabel("concurrent streams")
            ax.set_ylabel("aggregate tokens/s")
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(base + ".png", dpi=110)
        md += f"\n![aggregate decode](chat-{date}{suffix}.png)\n"
    except ImportError:
        md += "\n(matplotlib missing: no chart)\n"
    with open(base + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
