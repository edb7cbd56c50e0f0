#!/usr/bin/env bash
# Builds kiln's WebAssembly package (crates/kiln-wasm) for the playground's in-browser mode.
#
#   scripts/build-wasm.sh [--no-simd] [--out DIR]
#
# 1. adds the wasm32-unknown-unknown target (rustup);
# 2. installs wasm-bindgen-cli from crates.io at exactly the version of the `wasm-bindgen` crate
#    in Cargo.lock, into target/wasm-tools/ (once; `cargo install --locked`, a few minutes);
# 3. builds kiln-wasm in release for wasm32 with SIMD128 (`-C target-feature=+simd128`; with
#    --no-simd without it, for comparisons);
# 4. runs wasm-bindgen --target web into target/wasm-pkg/ (or --out DIR; target/wasm-pkg-nosimd/
#    with --no-simd): kiln_wasm.js and kiln_wasm_bg.wasm, which `kiln serve` serves at /wasm/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SIMD=1
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-simd) SIMD=0 ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: $0 [--no-simd] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  if [ "$SIMD" = 1 ]; then OUT="$ROOT/target/wasm-pkg"; else OUT="$ROOT/target/wasm-pkg-nosimd"; fi
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# The version wasm-bindgen-cli must have: the wasm-bindgen crate's, from Cargo.lock.
VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ -z "$VERSION" ]; then
  echo "build-wasm: no wasm-bindgen crate in Cargo.lock" >&2
  exit 1
fi

echo "== wasm32-unknown-unknown target"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

TOOLS="$ROOT/target/wasm-tools"
BINDGEN="$TOOLS/bin/wasm-bindgen"
if [ ! -x "$BINDGEN" ] || [ "$("$BINDGEN" --version | awk '{print $2}')" != "$VERSION" ]; then
  echo "== installing wasm-bindgen-cli $VERSION into $TOOLS (once; a few minutes)"
  # --locked builds the CLI's own dependency versions; a registry mirror that lacks one of them
  # (seen: webpki-roots 1.0.11) fails that, and the newest compatible versions are used instead.
  if ! CARGO_TARGET_DIR="$TARGET_DIR/wasm-tools-build" \
      cargo install wasm-bindgen-cli --version "$VERSION" --locked --root "$TOOLS"; then
    echo "build-wasm: --locked install failed; retrying with the newest compatible dependencies" >&2
    CARGO_TARGET_DIR="$TARGET_DIR/wasm-tools-build" \
      cargo install wasm-bindgen-cli --version "$VERSION" --root "$TOOLS"
  fi
fi

echo "== cargo build -p kiln-wasm (release, wasm32, simd128: $([ "$SIMD" = 1 ] && echo on || echo off))"
# RUSTFLAGS replaces .cargo/config.toml's flags for the wasm target (CARGO_TARGET_<triple>_RUSTFLAGS
# would be merged with them, and simd128 could not be turned off), so all are given here.
FLAGS='--cfg getrandom_backend="wasm_js"'
if [ "$SIMD" = 1 ]; then
  FLAGS="$FLAGS -C target-feature=+simd128"
  WASM_TARGET_DIR="$TARGET_DIR"
else
  # A separate target folder, so the two builds do not keep rebuilding each other.
  WASM_TARGET_DIR="$TARGET_DIR/wasm-nosimd"
fi
RUSTFLAGS="$FLAGS" CARGO_TARGET_DIR="$WASM_TARGET_DIR" \
  cargo build --release --locked -p kiln-wasm --target wasm32-unknown-unknown

echo "== wasm-bindgen --target web -> $OUT"
mkdir -p "$OUT"
"$BINDGEN" --target web --out-dir "$OUT" --out-name kiln_wasm \
  "$WASM_TARGET_DIR/wasm32-unknown-unknown/release/kiln_wasm.wasm"
ls -l "$OUT"
