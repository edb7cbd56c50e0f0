#!/usr/bin/env bash
# Load and soak: 10,000 embedding requests at 64 concurrent connections, then 200 streamed chat
# completions at 16, against one `kiln serve` holding both models, with deliberately small
# queues so that overflow happens and must be answered 429 (never 5xx, never a dropped
# connection). The whole load runs ROUNDS times (default 3). kiln's resident memory is sampled
# before, 5 s after each round (the prefix cache still holds finished chats), once the server
# has been idle past --prefix-cache-ttl (TTL, default 30 s here; 300 s is kiln's default) and
# --release-memory-after, and at peak: idle memory must come back to the pre-load baseline,
# round after round (no leak). Writes bench/results/load-DATE.md. Run by hand (about 8 minutes):
#
#   bash bench/load/run.sh
#
# Needs target/release/kiln (cargo build --release -p kiln-cli), the real models (kiln fetch),
# and oha (installed from crates.io into target/tools when absent).
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=target/release/kiln
OHA=${OHA:-target/tools/bin/oha}
if [ ! -x "$OHA" ]; then
  cargo install oha --locked --root target/tools
fi
DATE=$(date -u +%Y-%m-%d)
# EXTRA: more `kiln serve` flags (e.g. EXTRA="--prefix-cache-tokens 0"); SUFFIX names the results file.
EXTRA=${EXTRA:-}
ROUNDS_N=${ROUNDS:-3}
TTL=${TTL:-30}
OUT=bench/results/load-$DATE${SUFFIX:-}.md
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$KILN" serve --offline --port 0 --model models/all-MiniLM-L6-v2 --model SmolLM2-135M-Instruct \
  --max-queue 32 --max-sequences 8 --prefix-cache-ttl "$TTL" $EXTRA 2>"$WORK/serve.log" &
PID=$!
URL=""
for _ in $(seq 1 120); do
  URL=$(grep -o 'listening on http://[^ ]*' "$WORK/serve.log" | head -1 | sed 's/listening on //') || true
  [ -n "$URL" ] && break
  sleep 0.5
done
[ -n "$URL" ] || { cat "$WORK/serve.log"; exit 1; }

rss() { awk '/VmRSS/ {print int($2/1024)}' /proc/$PID/status; }
peak() { awk '/VmHWM/ {print int($2/1024)}' /proc/$PID/status; }

# Warm both models (first-touch of weights, allocator arenas), let the warm-up chat's cache
# expire, then take the baseline.
curl -sf "$URL/v1/embeddings" -H 'content-type: application/json' \
  -d '{"model":"all-MiniLM-L6-v2","input":"warm up"}' >/dev/null
curl -sf "$URL/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"SmolLM2-135M-Instruct","messages":[{"role":"user","content":"Hi"}],"max_tokens":4}' >/dev/null
sleep $((TTL + 8))
BASE=$(rss)

EMB='{"model":"all-MiniLM-L6-v2","input":"The quick brown fox jumps over the lazy dog near the riverbank at dawn."}'
CHAT='{"model":"SmolLM2-135M-Instruct","stream":true,"max_tokens":32,"messages":[{"role":"user","content":"Write one sentence about kilns."}]}'
# Identical rounds: the first shows the load, the later ones that idle memory does not creep up
# (a leak would grow it again by about the same amount each round).
ROUNDS=""
for round in $(seq 1 "$ROUNDS_N"); do
  "$OHA" -n 10000 -c 64 --no-tui --output-format json -m POST -H 'content-type: application/json' \
    -d "$EMB" "$URL/v1/embeddings" > "$WORK/emb$round.json"
  "$OHA" -n 200 -c 16 --no-tui --output-format json -m POST -H 'content-type: application/json' \
    -d "$CHAT" "$URL/v1/chat/completions" > "$WORK/chat$round.json"
  sleep 5
  HOT=$(rss)
  sleep $((TTL + 8))
  ROUNDS="$ROUNDS $HOT,$(rss)"
done
PEAK=$(peak)
# The server is still up, and no panic was logged.
curl -sf "$URL/health/ready" >/dev/null
PANICS=$(grep -c panicked "$WORK/serve.log" || true)
METRICS=$(curl -sf "$URL/metrics" | grep -E '^kiln_(kv_cache|running|queue|prefix_cache_tokens)' | tr '\n' ';')

EXTRA="$EXTRA" TTL="$TTL" python3 - "$WORK" "$OUT" "$BASE" "$PEAK" "$PANICS" "$METRICS" $ROUNDS <<'PY'
import json, platform, subprocess, sys, datetime, os
work, out = sys.argv[1:3]
extra = f" --prefix-cache-ttl {os.environ['TTL']}" + ((" " + os.environ["EXTRA"]) if os.environ.get("EXTRA") else "")
base, peak, panics = map(int, sys.argv[3:6])
metrics = sys.argv[6]
after = [tuple(int(v) for v in x.split(",")) for x in sys.argv[7:]]
ttl = int(os.environ["TTL"])
def row(name, n, c, path):
    d = json.load(open(path))
    codes = {int(k): v for k, v in d["statusCodeDistribution"].items()}
    errors = sum(d.get("errorDistribution", {}).values())
    five = sum(v for k, v in codes.items() if k >= 500)
    lat = d["latencyPercentiles"]
    return (f"| {name} | {n} | {c} | {codes.get(200, 0)} | {codes.get(429, 0)} | {five} | {errors} | "
            f"{d['summary']['requestsPerSec']:.0f} | {lat['p50']*1000:.1f} | {lat['p99']*1000:.1f} |"), five + errors
rows, bad = [], 0
for r in range(1, len(after) + 1):
    for name, n, c, f in (("embeddings, one sentence", 10000, 64, "emb"), ("chat, streamed, 32 tokens", 200, 16, "chat")):
        line, b = row(f"round {r}: {name}", n, c, os.path.join(work, f"{f}{r}.json"))
        rows.append(line); bad += b
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
load = os.getloadavg()[0]
idle = [i for _, i in after]
over = idle[-1] - base
creep = idle[-1] - idle[0]
lines = [
    f"# Load and soak, {datetime.date.today().isoformat()}",
    "",
    "Command: `bash bench/load/run.sh` (oha from crates.io as the client, on the same machine).",
    f"Machine: {cpu}, 2 cores, {platform.system()}; kiln and oha share the 2 cores (1-minute load average at the end: {load:.1f}).",
    f"Server: `kiln serve --model all-MiniLM-L6-v2 --model SmolLM2-135M-Instruct --max-queue 32 --max-sequences 8{extra}`",
    "(small queues on purpose, so overflow must be answered 429).",
    "",
    "| workload | requests | concurrency | 200 | 429 | 5xx | connection errors | req/s | p50 ms | p99 ms |",
    "|---|---|---|---|---|---|---|---|---|---|",
    *rows,
    "",
    "| resident memory (MiB) | |",
    "|---|---|",
    f"| baseline after warm-up (one request per model, then {ttl + 8} s idle) | {base} |",
    *[f"| round {r}: 5 s after / {ttl + 8} s after (idle) | {h} / {i} |" for r, (h, i) in enumerate(after, 1)],
    f"| peak (VmHWM) | {peak} |",
    "",
    f"Gauges after the load: `{metrics}`",
    f"Panics logged: {panics}.",
]
verdict = bad == 0 and panics == 0 and over <= 16 and creep <= 8
lines += ["", f"Verdict: {'PASS' if verdict else 'FAIL'}: zero 5xx and connection errors, no panic; idle memory after "
          f"the last round within 16 MiB of the baseline (here {over:+d} MiB) and within 8 MiB of idle memory after "
          f"the first round (a leak would grow it each round; here {creep:+d} MiB)."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if verdict else 1)
PY
