#!/usr/bin/env bash
# What API keys cost per request: wrk against `kiln serve` with no key database, with keys in
# SQLite, and with keys in PostgreSQL (needs KILN_TEST_POSTGRES_URL, e.g. from
# `source scripts/postgres-test-server.sh`). Two routes: GET /v1/models (no model work, so the
# auth cost shows) and a one-sentence POST /v1/embeddings on all-MiniLM-L6-v2. Needs wrk.
#   bash bench/auth/run.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-5}"
kiln=target/release/kiln
cargo build --release --quiet -p kiln-cli
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/embed.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model": "all-MiniLM-L6-v2", "input": "kiln fires models"}'
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # label, database url or "", key or ""
  local label="$1" db="$2" key="$3" args=() hdr=()
  if [ -n "$db" ]; then args=(--database-url "$db"); fi
  if [ -n "$key" ]; then hdr=(-H "Authorization: Bearer $key"); fi
  env -u KILN_DATABASE_URL "$kiln" serve --offline --port 0 --model models/all-MiniLM-L6-v2 \
    ${args[@]+"${args[@]}"} 2> "$work/serve.log" &
  local pid=$!
  local port=""
  for _ in $(seq 100); do
    port="$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$work/serve.log" | sed 's/.*://' || true)"
    [ -n "$port" ] && break
    sleep 0.1
  done
  for route in models embed; do
    local out
    if [ "$route" = models ]; then
      out="$(wrk -t2 -c8 -d"${secs}s" ${hdr[@]+"${hdr[@]}"} "http://127.0.0.1:$port/v1/models")"
    else
      out="$(wrk -t2 -c8 -d"${secs}s" -s "$work/embed.lua" ${hdr[@]+"${hdr[@]}"} "http://127.0.0.1:$port/v1/embeddings")"
    fi
    local rps lat non2xx
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    lat="$(awk '/Latency/ {print $2; exit}' <<<"$out")"
    non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
    printf '%-22s %-8s %10s req/s  mean latency %8s  non-2xx %s\n' "$label" "$route" "$rps" "$lat" "${non2xx:-0}"
  done
  kill -TERM "$pid"; wait "$pid" || true
}

run "no key database" "" ""
db="sqlite://$work/kiln.db"
key="$("$kiln" keys create --name bench --database-url "$db" 2>/dev/null)"
run "keys in SQLite" "$db" "$key"
if [ -n "${KILN_TEST_POSTGRES_URL:-}" ]; then
  pg="${KILN_TEST_POSTGRES_URL%/*}/kiln_bench_$$"
  psql -q "$KILN_TEST_POSTGRES_URL" -c "CREATE DATABASE kiln_bench_$$"
  key="$("$kiln" keys create --name bench --database-url "$pg" 2>/dev/null)"
  run "keys in PostgreSQL" "$pg" "$key"
  psql -q "$KILN_TEST_POSTGRES_URL" -c "DROP DATABASE kiln_bench_$$"
fi
