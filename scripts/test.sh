#!/usr/bin/env bash
# The project's test command (the README's second command; CI runs exactly this).
# Fetches the real model if absent, then checks formatting, lints, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fetching the real models (skipped when present)"
cargo run --release --quiet -p kiln-cli -- fetch all-MiniLM-L6-v2
cargo run --release --quiet -p kiln-cli -- fetch SmolLM2-135M-Instruct
cargo run --release --quiet -p kiln-cli -- fetch gemma-3-270m
cargo run --release --quiet -p kiln-cli -- fetch Qwen2.5-Coder-0.5B-Instruct

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings

echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps --quiet

echo "== end to end: the official openai Python client against kiln serve"
cargo build --release --quiet -p kiln-cli
if [ ! -x target/e2e-venv/bin/python ]; then
  python3 -m venv target/e2e-venv
  target/e2e-venv/bin/pip install --quiet --disable-pip-version-check "openai==3.57.0"
fi
target/e2e-venv/bin/python scripts/e2e/openai_client.py --kiln target/release/kiln --model models/all-MiniLM-L6-v2
target/e2e-venv/bin/python scripts/e2e/openai_auth.py --kiln target/release/kiln --model models/all-MiniLM-L6-v2

echo "== schemathesis: generated requests against kiln's own /openapi.json on a live server"
bash scripts/e2e/schemathesis.sh target/release/kiln

echo "== WebAssembly: clippy for wasm32, the kernels' SIMD128 paths tested in Node (wasm32-wasip1)"
rustup target add wasm32-unknown-unknown wasm32-wasip1 >/dev/null
cargo clippy --release -p kiln-wasm -p kiln-kernels --target wasm32-unknown-unknown --quiet -- -D warnings
CARGO_TARGET_WASM32_WASIP1_RUNNER="node $PWD/scripts/wasi-run.mjs" \
  CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C target-feature=+simd128" \
  cargo test --release --quiet -p kiln-kernels --lib --target wasm32-wasip1

echo "== WebAssembly: the playground's package (scripts/build-wasm.sh -> target/wasm-pkg)"
bash scripts/build-wasm.sh

echo "== browser: the playground page in headless chromium against kiln serve (server and WASM modes)"
(cd scripts/browser && { [ -d node_modules/playwright-core ] || npm ci --silent --no-audit --no-fund; } \
  && node playground.test.mjs "$PWD/../../target/release/kiln")

echo "== cargo test"
# The key-store tests run on SQLite and on a real PostgreSQL: start a private one when it is
# installed (.ci/run installs it) and none is given.
if [ -z "${KILN_TEST_POSTGRES_URL:-}" ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  source scripts/postgres-test-server.sh
fi
cargo test --release --workspace
