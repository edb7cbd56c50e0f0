#!/usr/bin/env bash
# Property-based API testing: schemathesis (PyPI) reads kiln's own /openapi.json from a live
# `kiln serve` (an embedding and a chat model) and sends generated requests, valid and invalid,
# to every route. It fails on any 5xx, on a status code the description does not list, on a
# wrong content type, or on a body that breaks the described schema. Run by scripts/test.sh.
#
#   bash scripts/e2e/schemathesis.sh target/release/kiln
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN="${1:-target/release/kiln}"
VENV=target/st-venv
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

LOG=$(mktemp)
# Small generation limits keep each generated chat request short; every refusal is a 4xx.
"$KILN" serve --offline --port 0 --model models/all-MiniLM-L6-v2 --model SmolLM2-135M-Instruct \
  --max-completion-tokens 8 --max-prompt-tokens 256 --request-timeout 30 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
URL=""
for _ in $(seq 1 120); do
  URL=$(grep -o 'listening on http://[^ ]*' "$LOG" | head -1 | sed 's/listening on //') || true
  [ -n "$URL" ] && break
  sleep 0.5
done
[ -n "$URL" ] || { cat "$LOG"; echo "kiln serve did not start"; exit 1; }

REPORT=target/schemathesis
rm -rf "$REPORT"
status=0
"$VENV/bin/st" run "$URL/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples 40 --seed 20261201 --workers 2 \
  --request-timeout 60 --generation-database none --no-color --report junit --report-dir "$REPORT" || status=$?

# The server must have survived everything it was sent.
curl -sf "$URL/health/live" >/dev/null || { echo "kiln serve died under schemathesis"; tail -50 "$LOG"; exit 1; }
if grep -q "panicked" "$LOG"; then
  echo "kiln serve panicked:"; grep -B2 -A10 panicked "$LOG"; exit 1
fi
exit $status
