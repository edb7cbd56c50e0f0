#!/usr/bin/env python3
"""End-to-end check of API keys with the official `openai` Python client against `kiln serve`.

Creates a key limited to 3 requests per minute with `kiln keys create` in a fresh SQLite file,
serves the embedding model with that database, and checks what an OpenAI user sees: a wrong key
raises `AuthenticationError`, the right key works, the 4th request in the minute raises
`RateLimitError`; after SIGTERM, `kiln keys usage` shows the 3 requests and their tokens.
Exits non-zero on any mismatch. Run by scripts/test.sh.

    python scripts/e2e/openai_auth.py --kiln target/release/kiln --model models/all-MiniLM-L6-v2
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import openai
from openai import OpenAI

ENV = {"RUST_LOG": "info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"}


def kiln_json(kiln, *args):
    out = subprocess.run([kiln, *args, "--json"], env=ENV, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def start(kiln, model, db):
    proc = subprocess.Popen(
        [kiln, "serve", "--offline", "--port", "0", "--model", model, "--database-url", db],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
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
    model = os.path.basename(os.path.normpath(args.model))
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite://{tmp}/kiln.db"
        key = kiln_json(args.kiln, "keys", "create", "--name", "e2e", "--rpm", "3", "--database-url", db)
        proc, url = start(args.kiln, args.model, db)
        prompt_tokens = 0
        try:
            wrong = OpenAI(base_url=url + "/v1", api_key="kiln-not-a-key", max_retries=0)
            try:
                wrong.embeddings.create(model=model, input="hello")
                failures.append("a wrong key was accepted")
            except openai.AuthenticationError as e:
                print("wrong key:", e.status_code, e.code)
                if e.code != "invalid_api_key":
                    failures.append(f"wrong key: code {e.code}")
            client = OpenAI(base_url=url + "/v1", api_key=key["key"], max_retries=0)
            for text in ["one", "two words", "three words here"]:
                resp = client.embeddings.create(model=model, input=text)
                prompt_tokens += resp.usage.prompt_tokens
            print("3 requests with the key: ok")
            try:
                client.embeddings.create(model=model, input="four")
                failures.append("the 4th request in a minute was accepted with --rpm 3")
            except openai.RateLimitError as e:
                retry = e.response.headers.get("retry-after")
                print("4th request:", e.status_code, e.code, "retry-after", retry)
                if not retry or not 1 <= int(retry) <= 60:
                    failures.append(f"Retry-After {retry!r}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        usage = kiln_json(args.kiln, "keys", "usage", "--key", key["id"], "--database-url", db)
        print("usage:", usage)
        got = [(u["requests"], u["prompt_tokens"], u["completion_tokens"]) for u in usage]
        if got != [(3, prompt_tokens, 0)]:
            failures.append(f"usage {got}, expected {[(3, prompt_tokens, 0)]}")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
