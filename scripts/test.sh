#!/usr/bin/env bash
# The project's test command (the README's second command; CI runs exactly this).
# Fetches the real model if absent, then checks formatting, lints, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fetching the real model (skipped when present)"
cargo run --release --quiet -p kiln-cli -- fetch all-MiniLM-L6-v2

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings

echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps --quiet

echo "== cargo test"
cargo test --release --workspace
