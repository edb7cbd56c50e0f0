#!/usr/bin/env python3
"""End-to-end check with the official `openai` Python client against a live `kiln serve`.

Starts the kiln binary on a free port with the real model, then asks for embeddings the way
an OpenAI user would (default base64 transfer, and explicit floats), and checks them against
sentence-transformers' reference vectors. Exits non-zero on any mismatch. Run by scripts/test.sh.

    python scripts/e2e/openai_client.py --kiln target/release/kiln --model models/all-MiniLM-L6-v2
"""
import argparse
import json
import math
import re
import subprocess
import sys
import time

import openai
from openai import OpenAI

REFERENCE = "crates/kiln-core/tests/data/minilm_reference.json"


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def start(kiln, model):
    proc = subprocess.Popen(
        [kiln, "serve", "--offline", "--port", "0", "--model", model, "--model", "SmolLM2-135M-Instruct"],
        stderr=subprocess.PIPE,
        text=True,
        env={"RUST_LOG": "info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    sys.exit("kiln serve did not start listening")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    args = ap.parse_args()
    items = json.load(open(REFERENCE, encoding="utf-8"))["items"][:8]
    texts = [i["text"] for i in items]
    proc, url = start(args.kiln, args.model)
    failures = 0
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        models = [m.id for m in client.models.list().data]
        print("models:", models)
        assert "all-MiniLM-L6-v2" in models, models
        for fmt in ("base64 (client default)", "float"):
            kwargs = {} if fmt.startswith("base64") else {"encoding_format": "float"}
            resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, **kwargs)
            worst = min(cosine(d.embedding, i["embedding"]) for d, i in zip(resp.data, items))
            tokens = sum(i["num_tokens"] for i in items)
            ok = worst >= 0.99999 and resp.usage.prompt_tokens == tokens and len(resp.data) == len(texts)
            failures += not ok
            print(f"{fmt}: {len(resp.data)} vectors of {len(resp.data[0].embedding)}, "
                  f"worst cosine {worst:.7f}, prompt_tokens {resp.usage.prompt_tokens} (expected {tokens}): "
                  f"{'ok' if ok else 'FAILED'}")
        stream = client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "system", "content": "You are a concise assistant."},
                      {"role": "user", "content": "What is the capital of France?"}],
            stream=True, temperature=0, max_tokens=24, stream_options={"include_usage": True},
        )
        pieces, usage, finish = [], None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        answer = "".join(pieces)
        ok = "Paris" in answer and usage is not None and usage.completion_tokens > 0 and finish in ("stop", "length")
        failures += not ok
        print(f"chat stream: {len(pieces)} chunks, {answer!r}, finish {finish}, usage {usage}: {'ok' if ok else 'FAILED'}")
        try:
            client.embeddings.create(model="no-such-model", input="x")
            print("unknown model: no error raised: FAILED")
            failures += 1
        except openai.NotFoundError as e:
            print("unknown model: NotFoundError:", e.body["message"] if isinstance(e.body, dict) else e.body, ": ok")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{4 - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
