#!/usr/bin/env python3
"""Side-by-side embeddings benchmark: kiln vs sentence-transformers (FastAPI) vs ONNX Runtime (FastAPI).

Run by hand from the repository root (not in CI), after `bash bench/setup.sh`:

    bench/.venv/bin/python bench/embeddings/run.py            # full run -> bench/results/embeddings-<date>.{json,md,png}
    bench/.venv/bin/python bench/embeddings/run.py --quick    # smoke run -> bench/.cache/results/

Servers run one at a time, each launched fresh and killed at the end of its section (also on
errors and Ctrl-C). See bench/README.md for what is measured and how.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import importlib.metadata as md
import itertools
import json
import math
import os
import platform
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
MODEL_NAME = "all-MiniLM-L6-v2"
SERVER_ORDER = ["kiln", "python", "onnx"]
LABELS = {
    "kiln": "kiln (Rust)",
    "python": "sentence-transformers + FastAPI",
    "onnx": "ONNX Runtime fp32 + FastAPI",
}
INTERRUPTED = threading.Event()  # set by SIGINT/SIGTERM; the async load loops poll it
JSON_HEADERS = {"Content-Type": "application/json", "Connection": "keep-alive"}

FULL = dict(health_n=500, lat_warmup=50, lat_n=500, b32_warmup=3, b32_n=30, b32_rounds=3,
            clients=16, conc_n=2000, conc_rounds=3, health_conc_n=2000)
QUICK = dict(health_n=100, lat_warmup=10, lat_n=100, b32_warmup=1, b32_n=5, b32_rounds=2,
             clients=16, conc_n=200, conc_rounds=2, health_conc_n=300)

# Targets for kiln relative to the Python baseline (ratio kiln/python).
TARGETS = [
    # (key, description, metric path, comparison, bound)
    ("latency_p50", "1-sentence p50 latency <= 0.1x python", ("latency_1", "p50_ms"), "<=", 0.1),
    ("tput_b32", "throughput at batch 32 >= 2x python", ("batch32", "sentences_per_s"), ">=", 2.0),
    ("tput_c16", "throughput at 16 clients >= 2x python", ("concurrent", "sentences_per_s"), ">=", 2.0),
    ("rss_peak", "peak RSS <= 0.3x python", ("memory", "rss_peak_mib"), "<=", 0.3),
    ("rss_steady", "steady RSS after load <= 0.3x python", ("memory", "rss_after_load_mib"), "<=", 0.3),
]

# ---------------------------------------------------------------- inputs

SHORT_SENTENCES = [
    "This is a test sentence.",
    "How do I reset my password?",
    "The weather is lovely today.",
    "Kiln serves embeddings quickly.",
    "Where is the nearest train station?",
    "She sold the old car last week.",
    "Rust compiles to fast native code.",
    "What time does the shop open?",
    "Cats sleep for most of the day.",
    "Please send me the quarterly report.",
    "The river flooded after the storm.",
    "I would like a cup of coffee.",
    "Search results should be relevant.",
    "Our team ships a release every Friday.",
    "Mountains are covered in fresh snow.",
    "Can you recommend a good book?",
]

WORDS = (
    "the a an model server fast river mountain city quiet green blue old new bright dark small large "
    "engineer teacher student doctor artist farmer writer runner builds reads writes sends finds moves "
    "opens closes carries paints measures compares answers during after before under over near across "
    "through behind morning evening winter summer garden kitchen library market station harbor bridge "
    "window letter report song story question number signal pattern network memory kernel thread cache "
    "quickly slowly carefully quietly often never always today tomorrow yesterday because while"
).split()
CORRECTNESS_SENTENCES = [
    "This is a test sentence.",
    "The quick brown fox jumps over the lazy dog.",
    "Café, naïve façade, résumé, jalapeño, Zürich.",
    "机器学习模型的部署需要低延迟和高吞吐量。",
    "hello",
    "Emoji test: 🔥🚀 kiln is fast 🎉",
]


def twelve_word_sentences(n: int, seed: int = 1234) -> List[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(12)]
        out.append(" ".join(words).capitalize() + ".")
    return out


def body(inp: Any) -> bytes:
    return json.dumps({"model": MODEL_NAME, "input": inp}).encode()


# ---------------------------------------------------------------- process helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tree(proc: psutil.Process) -> List[psutil.Process]:
    try:
        return [proc] + proc.children(recursive=True)
    except psutil.Error:
        return [proc]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in tree(proc):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in tree(proc):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def self_cpu() -> float:
    return time.process_time()  # this process, all threads, high resolution


def system_busy() -> float:
    """CPU seconds spent by the whole machine so far (all cores, not idle)."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Waits (up to max_wait s) until other processes use < threshold cores; returns the last reading."""
    deadline = time.perf_counter() + max_wait
    said = False
    while True:
        b0, c0, t0 = system_busy(), self_cpu(), time.perf_counter()
        time.sleep(2.0)
        busy = (system_busy() - b0 - (self_cpu() - c0)) / (time.perf_counter() - t0)
        if busy < threshold or time.perf_counter() > deadline:
            if busy >= threshold:
                print(f"   WARNING: machine still busy ({busy:.2f} cores used by other processes); measuring anyway",
                      flush=True)
            return busy
        if not said:
            print(f"   waiting for a quiet machine ({busy:.2f} cores busy elsewhere; up to {max_wait:.0f}s) ...",
                  flush=True)
            said = True


class RssSampler(threading.Thread):
    """Samples the server tree's RSS every `interval` s (for the peak)."""

    def __init__(self, proc: psutil.Process, interval: float = 0.05):
        super().__init__(daemon=True)
        self.proc, self.interval = proc, interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, tree_rss(self.proc))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


class Server:
    """A launched server process (own process group), killed by stop()."""

    def __init__(self, name: str, cmd: List[str], log_path: str, env: Dict[str, str]):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.log = open(log_path, "wb")
        self.t_launch = time.perf_counter()
        self.popen = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                      cwd=REPO, start_new_session=True)
        self.proc = psutil.Process(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self.log.close()

    def log_tail(self, n: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------- HTTP clients


class SeqClient:
    """Sequential client on one persistent HTTP/1.1 keep-alive connection (stdlib http.client:
    the cheapest Python client per request, so client overhead stays small)."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, payload: Optional[bytes] = None):
        try:
            self.conn.request(method, path, body=payload, headers=JSON_HEADERS if payload else {})
            r = self.conn.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, ConnectionError, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise

    def embed(self, inp: Any) -> dict:
        status, data = self.request("POST", "/v1/embeddings", body(inp))
        if status != 200:
            raise RuntimeError(f"POST /v1/embeddings -> {status}: {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.conn.close()


def pct(xs: List[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lat_stats(lat_s: List[float]) -> Dict[str, float]:
    ms = [x * 1000 for x in lat_s]
    return {"n": len(ms), "p50_ms": pct(ms, 0.5), "p90_ms": pct(ms, 0.9), "p99_ms": pct(ms, 0.99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan"), "max_ms": max(ms) if ms else float("nan")}


def seq_phase(client: SeqClient, method: str, path: str, payloads: List[Optional[bytes]], n: int,
              deadline: float) -> Dict[str, Any]:
    lat, errors = [], 0
    c0, t0 = self_cpu(), time.perf_counter()
    for i in range(n):
        if time.perf_counter() > deadline:
            break
        p = payloads[i % len(payloads)]
        t = time.perf_counter()
        status, _ = client.request(method, path, p)
        lat.append(time.perf_counter() - t)
        if status != 200:
            errors += 1
    wall = time.perf_counter() - t0
    out = lat_stats(lat)
    out.update(errors=errors, wall_s=wall, truncated=len(lat) < n,
               client_cpu_ms_per_req=(self_cpu() - c0) * 1000 / max(len(lat), 1))
    return out


async def _conc(port: int, method: str, path: str, payloads: List[Optional[bytes]], total: int,
                clients: int, deadline: float) -> Dict[str, Any]:
    import aiohttp

    url = f"http://127.0.0.1:{port}{path}"
    lat: List[float] = []
    errors = [0]
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=clients, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:

        async def one(p):
            t = time.perf_counter()
            async with s.request(method, url, data=p, headers=JSON_HEADERS if p else None) as r:
                await r.read()
                if r.status != 200:
                    errors[0] += 1
            return time.perf_counter() - t

        # open the connections first (not measured)
        await asyncio.gather(*[one(payloads[i % len(payloads)]) for i in range(clients)])

        async def worker():
            while True:
                i = next(counter)
                if i >= total or time.perf_counter() > deadline or INTERRUPTED.is_set():
                    return
                lat.append(await one(payloads[i % len(payloads)]))

        c0, t0 = self_cpu(), time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        wall = time.perf_counter() - t0
        ccpu = self_cpu() - c0
    out = lat_stats(lat)
    out.update(errors=errors[0], wall_s=wall, requests_per_s=len(lat) / wall if wall else 0.0,
               truncated=len(lat) < total, client_cpu_ms_per_req=ccpu * 1000 / max(len(lat), 1),
               client_cpu_cores=ccpu / wall if wall else 0.0)
    return out


def run_async(coro):
    try:
        import uvloop  # installed with uvicorn[standard]; cheaper event loop for the client

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def conc_phase(port, method, path, payloads, total, clients, deadline, server: Server):
    s0 = tree_cpu(server.proc)
    out = run_async(_conc(port, method, path, payloads, total, clients, deadline))
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt("interrupted")
    out["server_cpu_cores"] = (tree_cpu(server.proc) - s0) / out["wall_s"] if out["wall_s"] else 0.0
    return out


# ---------------------------------------------------------------- one server


def wait_ready(server: Server, port: int, timeout: float) -> Dict[str, Any]:
    """Polls until GET /health is 200, then until the first POST /v1/embeddings succeeds."""
    t_health = None
    probe = body("warm up")
    deadline = server.t_launch + timeout
    while True:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with code {server.popen.returncode} during startup:\n"
                               + server.log_tail())
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{server.name} not ready after {timeout:.0f}s:\n" + server.log_tail())
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if t_health is None:
                conn.request("GET", "/health")
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    t_health = time.perf_counter() - server.t_launch
            if t_health is not None:
                conn.request("POST", "/v1/embeddings", body=probe, headers=JSON_HEADERS)
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    conn.close()
                    return {"health_ok_s": t_health, "first_embedding_s": time.perf_counter() - server.t_launch}
            conn.close()
        except (ConnectionError, OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)


def check_response(resp: dict, n: int) -> Dict[str, Any]:
    import numpy as np

    data = sorted(resp["data"], key=lambda d: d["index"])
    assert len(data) == n, f"expected {n} embeddings, got {len(data)}"
    vecs = np.array([d["embedding"] for d in data], dtype=np.float64)
    return {"dim": int(vecs.shape[1]), "norm_min": float(np.linalg.norm(vecs, axis=1).min()),
            "norm_max": float(np.linalg.norm(vecs, axis=1).max()), "usage": resp.get("usage"),
            "object": resp.get("object"), "vecs": vecs}


def bench_server(name: str, cmd: List[str], cfg: Dict[str, int], args, logdir: str) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"name": name, "label": LABELS[name], "cmd": shlex.join(cmd), "status": "failed"}
    port = int(cmd[cmd.index("--port") + 1])
    if port_in_use(port):
        rec["error"] = f"port {port} already in use"
        return rec
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    log_path = os.path.join(logdir, f"{name}.log")
    print(f"\n== {LABELS[name]}\n   $ {rec['cmd']}\n   log: {os.path.relpath(log_path, REPO)}", flush=True)
    rec["background_before_cores"] = wait_quiet(args.wait_quiet)
    sys_b0, self_c0 = system_busy(), self_cpu()
    server = Server(name, cmd, log_path, env)
    sampler: Optional[RssSampler] = None
    client: Optional[SeqClient] = None
    t_section = time.perf_counter()

    def deadline() -> float:
        return time.perf_counter() + args.phase_timeout

    try:
        rec["startup"] = wait_ready(server, port, args.startup_timeout)
        rec["memory"] = {"rss_ready_mib": tree_rss(server.proc) / 2**20}
        print(f"   ready: /health after {rec['startup']['health_ok_s']:.2f}s, first embedding after "
              f"{rec['startup']['first_embedding_s']:.2f}s", flush=True)
        sampler = RssSampler(server.proc)
        sampler.start()
        client = SeqClient(port)

        # correctness vectors (compared across servers at the end) + response shape
        resp = client.embed(CORRECTNESS_SENTENCES)
        chk = check_response(resp, len(CORRECTNESS_SENTENCES))
        single = check_response(client.embed(CORRECTNESS_SENTENCES[0]), 1)
        import numpy as np

        self_cos = float(np.dot(single["vecs"][0], chk["vecs"][0]) /
                         (np.linalg.norm(single["vecs"][0]) * np.linalg.norm(chk["vecs"][0])))
        rec["correctness"] = {"dim": chk["dim"], "norm_min": chk["norm_min"], "norm_max": chk["norm_max"],
                              "usage": chk["usage"], "single_vs_batch_cosine": self_cos}
        rec["_vecs"] = chk["vecs"]

        short = [body(s) for s in SHORT_SENTENCES]
        batches = [body(twelve_word_sentences(32, seed=k)) for k in range(8)]

        # warm-up: single sentences and batches of 32, then the steady RSS
        seq_phase(client, "POST", "/v1/embeddings", short, cfg["lat_warmup"], deadline())
        seq_phase(client, "POST", "/v1/embeddings", batches, cfg["b32_warmup"], deadline())
        time.sleep(1.0)
        rec["memory"]["rss_after_warmup_mib"] = tree_rss(server.proc) / 2**20

        print("   GET /health (client + HTTP floor) ...", flush=True)
        rec["health"] = seq_phase(client, "GET", "/health", [None], cfg["health_n"], deadline())

        print("   1 sentence / request, sequential ...", flush=True)
        s0 = tree_cpu(server.proc)
        rec["latency_1"] = seq_phase(client, "POST", "/v1/embeddings", short, cfg["lat_n"], deadline())
        rec["latency_1"]["server_cpu_cores"] = (tree_cpu(server.proc) - s0) / rec["latency_1"]["wall_s"]

        print("   32 sentences / request, sequential ...", flush=True)
        rounds = []
        for r in range(cfg["b32_rounds"]):
            s0 = tree_cpu(server.proc)
            ph = seq_phase(client, "POST", "/v1/embeddings", batches, cfg["b32_n"], deadline())
            ph["sentences_per_s"] = 32 * ph["n"] / ph["wall_s"]
            ph["server_cpu_cores"] = (tree_cpu(server.proc) - s0) / ph["wall_s"]
            rounds.append(ph)
        rec["batch32"] = {
            "rounds": rounds,
            "sentences_per_s": statistics.median(p["sentences_per_s"] for p in rounds),
            "p50_ms": statistics.median(p["p50_ms"] for p in rounds),
            "server_cpu_cores": statistics.median(p["server_cpu_cores"] for p in rounds),
        }
        client.close()
        client = None

        print(f"   {cfg['clients']} concurrent clients, GET /health (client ceiling) ...", flush=True)
        rec["health_concurrent"] = conc_phase(port, "GET", "/health", [None], cfg["health_conc_n"],
                                              cfg["clients"], deadline(), server)

        print(f"   {cfg['clients']} concurrent clients, 1 sentence / request ...", flush=True)
        rounds = []
        for r in range(cfg["conc_rounds"]):
            ph = conc_phase(port, "POST", "/v1/embeddings", short, cfg["conc_n"], cfg["clients"], deadline(), server)
            ph["sentences_per_s"] = ph["requests_per_s"]
            rounds.append(ph)
        med = lambda k: statistics.median(p[k] for p in rounds)  # noqa: E731
        rec["concurrent"] = {
            "clients": cfg["clients"], "rounds": rounds, "sentences_per_s": med("sentences_per_s"),
            "requests_per_s": med("requests_per_s"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            "server_cpu_cores": med("server_cpu_cores"), "client_cpu_cores": med("client_cpu_cores"),
            "client_cpu_ms_per_req": med("client_cpu_ms_per_req"),
            "errors": sum(p["errors"] for p in rounds),
        }

        time.sleep(2.0)
        rec["memory"]["rss_after_load_mib"] = tree_rss(server.proc) / 2**20
        sampler.stop()
        rec["memory"]["rss_peak_mib"] = max(sampler.peak, tree_rss(server.proc)) / 2**20
        rec["memory"]["processes"] = len(tree(server.proc))
        rec["status"] = "ok"
        rec["section_s"] = time.perf_counter() - t_section
        # CPU used by other processes (not this client, not the server) during the section
        other = system_busy() - sys_b0 - (self_cpu() - self_c0) - tree_cpu(server.proc)
        rec["background_cpu_cores"] = max(other, 0.0) / rec["section_s"]
        if rec["background_cpu_cores"] > 0.1:
            print(f"   WARNING: other processes used {rec['background_cpu_cores']:.2f} cores during this section; "
                  "numbers are disturbed", flush=True)
        L, B, C, M = rec["latency_1"], rec["batch32"], rec["concurrent"], rec["memory"]
        print(f"   p50 {L['p50_ms']:.2f} ms, p99 {L['p99_ms']:.2f} ms | batch32 {B['sentences_per_s']:.0f} sent/s | "
              f"{cfg['clients']} clients {C['sentences_per_s']:.0f} sent/s | RSS peak {M['rss_peak_mib']:.0f} MiB, "
              f"after load {M['rss_after_load_mib']:.0f} MiB", flush=True)
    except Exception as e:  # record and go on with the next server
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["log_tail"] = server.log_tail()
        print(f"   FAILED: {rec['error']}", flush=True)
    finally:
        if client is not None:
            client.close()
        if sampler is not None:
            sampler.stop()
        server.stop()
    return rec


# ---------------------------------------------------------------- report


def sh(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
    except Exception:
        return ""


def machine_info(kiln_bin: str) -> Dict[str, Any]:
    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    os_name = platform.platform()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"') + f" (kernel {platform.release()})"
    except OSError:
        pass
    versions = {}
    for pkg in ["torch", "sentence-transformers", "transformers", "onnxruntime", "tokenizers", "numpy",
                "fastapi", "uvicorn", "aiohttp"]:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    versions["python"] = platform.python_version()
    kiln_version = sh([kiln_bin, "--version"]) if os.path.exists(kiln_bin) else ""
    git = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(sh(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "cpu_model": model, "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "os": os_name,
        "versions": versions, "kiln_version": kiln_version or None,
        "git_commit": git + ("-dirty" if dirty else ""),
    }


def get(rec: Dict[str, Any], path) -> Optional[float]:
    cur: Any = rec
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


ROWS = [
    # label, path, format
    ("cold start: launch -> /health 200 (s)", ("startup", "health_ok_s"), "{:.2f}"),
    ("cold start: launch -> first embedding (s)", ("startup", "first_embedding_s"), "{:.2f}"),
    ("GET /health p50, client+HTTP floor (ms)", ("health", "p50_ms"), "{:.3f}"),
    ("1 sentence: p50 latency (ms)", ("latency_1", "p50_ms"), "{:.2f}"),
    ("1 sentence: p99 latency (ms)", ("latency_1", "p99_ms"), "{:.2f}"),
    ("batch 32: throughput (sentences/s)", ("batch32", "sentences_per_s"), "{:.0f}"),
    ("batch 32: p50 request latency (ms)", ("batch32", "p50_ms"), "{:.1f}"),
    ("16 clients: throughput (sentences/s = req/s)", ("concurrent", "sentences_per_s"), "{:.0f}"),
    ("16 clients: p50 latency (ms)", ("concurrent", "p50_ms"), "{:.1f}"),
    ("16 clients: p99 latency (ms)", ("concurrent", "p99_ms"), "{:.1f}"),
    ("16 clients: server CPU (cores)", ("concurrent", "server_cpu_cores"), "{:.2f}"),
    ("16 clients: client CPU (cores)", ("concurrent", "client_cpu_cores"), "{:.2f}"),
    ("16 clients GET /health: req/s (client ceiling)", ("health_concurrent", "requests_per_s"), "{:.0f}"),
    ("RSS when ready (MiB)", ("memory", "rss_ready_mib"), "{:.0f}"),
    ("RSS after warm-up (MiB)", ("memory", "rss_after_warmup_mib"), "{:.0f}"),
    ("RSS peak (MiB)", ("memory", "rss_peak_mib"), "{:.0f}"),
    ("RSS after load (MiB)", ("memory", "rss_after_load_mib"), "{:.0f}"),
    ("other processes' CPU during the section (cores)", ("background_cpu_cores",), "{:.2f}"),
    ("min cosine vs python (6 sentences)", ("correctness", "min_cosine_vs_python"), "{:.6f}"),
]


def fmt(v: Optional[float], f: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)


def write_markdown(res: Dict[str, Any], path: str, png_name: str) -> None:
    S = res["servers"]
    m = res["machine"]
    cols = [n for n in SERVER_ORDER if n in S]
    L = []
    L.append(f"# Embeddings benchmark — {res['date']}{' (quick run)' if res['quick'] else ''}\n")
    L.append(f"Model: `{MODEL_NAME}` (384-d), CPU only. Servers run one at a time on the same machine as the "
             "Python load generator (which shares the cores; see the client rows).\n")
    L.append(f"Command: `{res['command']}`\n")
    L.append(f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} physical), "
             f"{m['memory_gib']} GiB RAM, {m['os']}. Git {m['git_commit']}.  ")
    v = m["versions"]
    L.append(f"Versions: python {v['python']}, torch {v['torch']}, sentence-transformers {v['sentence-transformers']}, "
             f"transformers {v['transformers']}, onnxruntime {v['onnxruntime']}, tokenizers {v['tokenizers']}, "
             f"fastapi {v['fastapi']}, uvicorn {v['uvicorn']}, aiohttp {v['aiohttp']}"
             + (f"; kiln: {m['kiln_version']}" if m.get("kiln_version") else "") + ".\n")
    L.append("## Servers\n")
    for n in cols:
        r = S[n]
        line = f"- **{r['label']}**: {r['status']}"
        if r.get("cmd"):
            line += f" — `{r['cmd']}`"
        if r.get("reason"):
            line += f" — {r['reason']}"
        if r.get("error"):
            line += f" — error: `{r['error'].splitlines()[0]}`"
        L.append(line)
    L.append("")
    c = res["config"]
    L.append(f"## Results\n\nSequential phases use one keep-alive connection; 1-sentence: {c['lat_n']} requests after "
             f"{c['lat_warmup']} warm-up; batch 32 (12-word sentences): median of {c['b32_rounds']} rounds x "
             f"{c['b32_n']} requests; {c['clients']} clients: median of {c['conc_rounds']} rounds x {c['conc_n']} "
             f"1-sentence requests. Ratios are value ratios (lower is better for latency/RSS, higher for throughput).\n")
    hdr = ["metric"] + cols + [f"kiln/{o}" for o in ("python", "onnx") if "kiln" in cols and o in cols]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for label, p, f in ROWS:
        vals = [get(S[n], p) if S[n]["status"] == "ok" else None for n in cols]
        row = [label] + [fmt(x, f) for x in vals]
        if "kiln" in cols:
            for o in ("python", "onnx"):
                if o in cols:
                    rr = ratio(get(S["kiln"], p), get(S[o], p)) if S["kiln"]["status"] == S[o]["status"] == "ok" else None
                    row.append("" if any(w in label for w in ("cosine", "other processes", "client CPU")) else fmt(rr, "{:.3g}x"))
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("## Targets (kiln vs the Python baseline)\n")
    L.append("| target | kiln/python | verdict |")
    L.append("|---|---|---|")
    for t in res["targets"]:
        L.append(f"| {t['description']} | {fmt(t['ratio'], '{:.3g}x')} | {t['verdict']} |")
    L.append("")
    cos = res.get("correctness", {})
    if cos:
        L.append("## Correctness\n")
        L.append("Cosine similarity of each server's embeddings with the Python baseline's, per sentence:\n")
        for n, d in cos.items():
            L.append(f"- {n}: " + ", ".join(f"{x:.6f}" for x in d["cosines"]) + f" (min {d['min']:.6f})")
        L.append("\nkiln is expected to be >= 0.9999.\n")
    L.append("## Notes\n")
    L.append("- Client overhead: the `GET /health` rows are an empty baseline (HTTP + client cost, no model). "
             "The load generator is Python (stdlib http.client for sequential phases, aiohttp on uvloop for "
             "concurrency) on the same cores as the server; its CPU use is reported per phase. When a server's "
             "16-client req/s approaches its `/health` ceiling, the client is the limit, not the server.")
    L.append("- Servers and client share the machine with everything else on it: the 'other processes' CPU' row "
             "should be ~0; if it is not, rerun on a quiet machine.")
    L.append("- RSS is the server process plus its children (psutil), sampled every 50 ms for the peak; "
             "'after warm-up' and 'after load' are single samples taken 1-2 s after the phase.")
    L.append("- Python servers: one uvicorn worker, `def` endpoint (FastAPI thread pool), access log off, "
             "JSONResponse; torch/ONNX Runtime limited to 2 intra-op threads. ONNX model: fp32, exported by "
             "bench/embeddings/export_onnx.py and fused by ONNX Runtime's transformer optimizer when available.")
    L.append(f"\n![chart]({png_name})\n")
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_chart(res: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = {n: r for n, r in res["servers"].items() if r["status"] == "ok"}
    names = [n for n in SERVER_ORDER if n in S]
    colors = {"kiln": "#d9534f", "python": "#5b7fbf", "onnx": "#6aa86a"}
    panels = [
        ("1-sentence p50 latency (ms, lower is better)", [("p50", ("latency_1", "p50_ms"))]),
        ("Throughput, batch 32 (sentences/s)", [("", ("batch32", "sentences_per_s"))]),
        (f"Throughput, {res['config']['clients']} clients x 1 sentence (sentences/s)",
         [("", ("concurrent", "sentences_per_s"))]),
        ("Resident memory (MiB, lower is better)",
         [("peak", ("memory", "rss_peak_mib")), ("after load", ("memory", "rss_after_load_mib"))]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, series) in zip(axes.flat, panels):
        width = 0.8 / len(series)
        for j, (lab, p) in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
            vals = [get(S[n], p) or 0.0 for n in names]
            bars = ax.bar(xs, vals, width=width * 0.95, color=[colors[n] for n in names],
                          alpha=1.0 if j == 0 else 0.55, edgecolor="black", linewidth=0.5)
            for b, v in zip(bars, vals):
                ax.annotate((f"{v:.0f}" if v >= 100 else f"{v:.3g}") + (f"\n{lab}" if lab and len(series) > 1 else ""),
                            (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([LABELS[n].replace(" + ", "\n+ ") for n in names], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.2)
    m = res["machine"]
    fig.suptitle(f"{MODEL_NAME} embeddings, {res['date']}{' (quick)' if res['quick'] else ''} — "
                 f"{m['cpu_model']}, {m['logical_cpus']} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few requests; results go to bench/.cache/results/")
    ap.add_argument("--servers", default=",".join(SERVER_ORDER), help="comma list of kiln,python,onnx")
    ap.add_argument("--kiln-bin", default=os.path.join(REPO, "target", "release", "kiln"))
    ap.add_argument("--kiln-args", default="", help="extra arguments appended to `kiln serve ...`")
    ap.add_argument("--baseline-args", default="",
                    help="extra arguments appended to both Python servers' command lines (e.g. --serialize)")
    ap.add_argument("--model", default=os.path.join(REPO, "models", MODEL_NAME))
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the Python servers")
    ap.add_argument("--startup-timeout", type=float, default=180.0, help="s until the first embedding")
    ap.add_argument("--phase-timeout", type=float, default=240.0, help="s per measured phase (cut short after)")
    ap.add_argument("--wait-quiet", type=float, default=120.0,
                    help="before each server, wait up to this many s for other processes to go idle (0: don't)")
    ap.add_argument("--out-dir", default=None, help="default: bench/results (full) or bench/.cache/results (quick)")
    args = ap.parse_args()

    def on_term(signum, frame):
        INTERRUPTED.set()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    cfg = dict(QUICK if args.quick else FULL)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SERVER_ORDER]
    if bad:
        ap.error(f"unknown servers {bad}")
    out_dir = args.out_dir or os.path.join(BENCH, ".cache" if args.quick else "", "results")
    out_dir = os.path.normpath(out_dir)
    logdir = os.path.join(BENCH, ".cache", "logs")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(logdir, exist_ok=True)
    date = dt.date.today().isoformat()
    stem = os.path.join(out_dir, f"embeddings-{date}{'-quick' if args.quick else ''}")

    exe = sys.executable
    if exe.startswith(REPO + os.sep):
        exe = os.path.relpath(exe, REPO)
    script = os.path.relpath(os.path.abspath(__file__), REPO)
    command = shlex.join([exe, script] + sys.argv[1:])
    print(f"embeddings benchmark ({'quick' if args.quick else 'full'}): {command}")
    info = machine_info(args.kiln_bin)
    print(f"machine: {info['cpu_model']}, {info['logical_cpus']} CPUs, {info['memory_gib']} GiB; {info['os']}")

    py = sys.executable
    cmds = {
        "kiln": [args.kiln_bin, "serve", "--model", args.model, "--host", "127.0.0.1", "--port", "PORT"]
        + shlex.split(args.kiln_args),
        "python": [py, os.path.join(HERE, "python_server.py"), "--model", args.model, "--host", "127.0.0.1",
                   "--port", "PORT", "--threads", str(args.threads)] + shlex.split(args.baseline_args),
        "onnx": [py, os.path.join(HERE, "onnx_server.py"), "--model", args.model, "--host", "127.0.0.1",
                 "--port", "PORT", "--threads", str(args.threads)] + shlex.split(args.baseline_args),
    }

    results: Dict[str, Any] = {}
    try:
        for name in SERVER_ORDER:
            if name not in wanted:
                continue
            if name == "kiln" and not (os.path.isfile(args.kiln_bin) and os.access(args.kiln_bin, os.X_OK)):
                msg = (f"binary not found at {args.kiln_bin} (build it with `cargo build --release`, "
                       "or pass --kiln-bin)")
                print(f"\n== {LABELS[name]}\n   SKIPPED: {msg}", flush=True)
                results[name] = {"name": name, "label": LABELS[name], "status": "skipped", "reason": msg}
                continue
            if name == "onnx" and not any(os.path.exists(os.path.join(BENCH, ".cache", "onnx", f))
                                          for f in ("model_opt.onnx", "model.onnx")):
                print("\n== exporting the model to ONNX (bench/embeddings/export_onnx.py) ...", flush=True)
                r = subprocess.run([py, os.path.join(HERE, "export_onnx.py"), "--model", args.model],
                                   timeout=600)
                if r.returncode != 0:
                    results[name] = {"name": name, "label": LABELS[name], "status": "failed",
                                     "error": "ONNX export failed"}
                    continue
            cmd = [str(free_port()) if c == "PORT" else c for c in cmds[name]]
            results[name] = {"name": name, "label": LABELS[name], "status": "interrupted", "cmd": shlex.join(cmd)}
            results[name] = bench_server(name, cmd, cfg, args, logdir)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, writing what was measured", flush=True)

    # correctness: cosine of each server's embeddings with the Python baseline's
    import numpy as np

    correctness = {}
    ref = results.get("python", {}).get("_vecs")
    for name, rec in results.items():
        vecs = rec.pop("_vecs", None)
        if name == "python" or ref is None or vecs is None:
            continue
        cos = (vecs * ref).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1))
        correctness[name] = {"cosines": [float(x) for x in cos], "min": float(cos.min())}
        rec["correctness"]["min_cosine_vs_python"] = float(cos.min())
    results.get("python", {}).pop("_vecs", None)
    if correctness:
        print("\ncosine vs python baseline (per sentence):")
        for n, d in correctness.items():
            flag = "" if n != "kiln" else ("  OK (>= 0.9999)" if d["min"] >= 0.9999 else "  BELOW 0.9999")
            print(f"   {n:7s} " + " ".join(f"{x:.6f}" for x in d["cosines"]) + flag)

    targets = []
    for key, desc, p, op, bound in TARGETS:
        k, b = results.get("kiln", {}), results.get("python", {})
        r = ratio(get(k, p), get(b, p)) if k.get("status") == b.get("status") == "ok" else None
        verdict = "n/a (kiln or python not measured)" if r is None else (
            "met" if (r <= bound if op == "<=" else r >= bound) else "missed")
        targets.append({"key": key, "description": desc, "ratio": r, "bound": bound, "op": op, "verdict": verdict})

    res = {"date": date, "quick": args.quick, "command": command, "machine": info, "config": cfg,
           "model": args.model, "servers": results, "correctness": correctness, "targets": targets}
    onnx_info = os.path.join(BENCH, ".cache", "onnx", "export_info.json")
    if os.path.exists(onnx_info):
        with open(onnx_info) as f:
            res["onnx_export"] = json.load(f)
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2, default=str)
    png = stem + ".png"
    try:
        write_chart(res, png)
    except Exception as e:
        print(f"chart failed: {type(e).__name__}: {e}")
    write_markdown(res, stem + ".md", os.path.basename(png))
    print("\ntargets (kiln/python):")
    for t in targets:
        print(f"   {t['description']:40s} {fmt(t['ratio'], '{:.3g}x'):>8s}  {t['verdict']}")
    shown = os.path.relpath(stem, REPO) if stem.startswith(REPO + os.sep) else stem
    print(f"\nwrote {shown}.json, .md, .png")
    return 0 if all(r.get("status") in ("ok", "skipped") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
