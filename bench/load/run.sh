#!/usr/bin/env bash
# Load and soak: 10,000 embedding requests at 64 concurrent connections, then 200 streamed chat
# completions at 16, against one `kiln serve` holding both models, with deliberately small
# queues so that overflow happens and must be answered 429 (never 5xx, never a dropped
# connection). kiln's resident memory is sampled before, at peak and after; it must come back
# to its baseline. Writes bench/results/load-DATE.md. Run by hand (about 3 minutes):
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
OUT=bench/results/load-$DATE.md
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$KILN" serve --offline --port 0 --model models/all-MiniLM-L6-v2 --model SmolLM2-135M-Instruct \
  --max-queue 32 --max-sequences 8 2>"$WORK/serve.log" &
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

# Warm both models (first-touch of weights, allocator arenas), then take the baseline.
curl -sf "$URL/v1/embeddings" -H 'content-type: application/json' \
  -d '{"model":"all-MiniLM-L6-v2","input":"warm up"}' >/dev/null
curl -sf "$URL/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"SmolLM2-135M-Instruct","messages":[{"role":"user","content":"Hi"}],"max_tokens":4}' >/dev/null
sleep 1
BASE=$(rss)

EMB='{"model":"all-MiniLM-L6-v2","input":"The quick brown fox jumps over the lazy dog near the riverbank at dawn."}'
"$OHA" -n 10000 -c 64 --no-tui --output-format json -m POST -H 'content-type: application/json' \
  -d "$EMB" "$URL/v1/embeddings" > "$WORK/emb.json"
AFTER_EMB=$(rss)

CHAT='{"model":"SmolLM2-135M-Instruct","stream":true,"max_tokens":32,"messages":[{"role":"user","content":"Write one sentence about kilns."}]}'
"$OHA" -n 200 -c 16 --no-tui --output-format json -m POST -H 'content-type: application/json' \
  -d "$CHAT" "$URL/v1/chat/completions" > "$WORK/chat.json"
PEAK=$(peak)
sleep 5
AFTER=$(rss)
# The server is still up, and no panic was logged.
curl -sf "$URL/health/ready" >/dev/null
PANICS=$(grep -c panicked "$WORK/serve.log" || true)

python3 - "$WORK/emb.json" "$WORK/chat.json" "$OUT" "$BASE" "$AFTER_EMB" "$PEAK" "$AFTER" "$PANICS" <<'PY'
import json, platform, subprocess, sys, datetime
emb, chat = (json.load(open(p)) for p in sys.argv[1:3])
out = sys.argv[3]
base, after_emb, peak, after, panics = map(int, sys.argv[4:9])
def row(name, n, c, d):
    codes = {int(k): v for k, v in d["statusCodeDistribution"].items()}
    errors = sum(d.get("errorDistribution", {}).values())
    five = sum(v for k, v in codes.items() if k >= 500)
    lat = d["latencyPercentiles"]
    ok = codes.get(200, 0)
    return (f"| {name} | {n} | {c} | {ok} | {codes.get(429, 0)} | {five} | {errors} | "
            f"{d['summary']['requestsPerSec']:.0f} | {lat['p50']*1000:.1f} | {lat['p99']*1000:.1f} |"), five, errors, codes
r1, f1, e1, c1 = row("embeddings, one sentence", 10000, 64, emb)
r2, f2, e2, c2 = row("chat, streamed, 32 tokens", 200, 16, chat)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [
    f"# Load and soak, {datetime.date.today().isoformat()}",
    "",
    "Command: `bash bench/load/run.sh` (oha from crates.io as the client, on the same machine).",
    f"Machine: {cpu}, 2 cores, {platform.system()}; kiln and oha share the 2 cores.",
    "Server: `kiln serve --model all-MiniLM-L6-v2 --model SmolLM2-135M-Instruct --max-queue 32 --max-sequences 8`",
    "(small queues on purpose, so overflow must be answered 429).",
    "",
    "| workload | requests | concurrency | 200 | 429 | 5xx | connection errors | req/s | p50 ms | p99 ms |",
    "|---|---|---|---|---|---|---|---|---|---|",
    r1, r2,
    "",
    "| resident memory (MiB) | |",
    "|---|---|",
    f"| baseline after warm-up | {base} |",
    f"| after the embedding load | {after_emb} |",
    f"| peak (VmHWM) | {peak} |",
    f"| 5 s after all load | {after} |",
    "",
    f"Panics logged: {panics}. Status codes: embeddings {c1}, chat {c2}.",
]
verdict = f1 == 0 and f2 == 0 and e1 == 0 and e2 == 0 and panics == 0 and after <= base + 32
lines.append("")
lines.append(f"Verdict: {'PASS' if verdict else 'FAIL'} (zero 5xx, zero connection errors, no panic, memory within 32 MiB of baseline after load).")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if verdict else 1)
PY
