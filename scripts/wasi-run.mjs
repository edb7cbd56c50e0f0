// Runs a wasm32-wasip1 program (e.g. a `cargo test` binary) in Node's WASI, so that the
// kernels' SIMD128 paths are tested without a browser:
//   CARGO_TARGET_WASM32_WASIP1_RUNNER="node scripts/wasi-run.mjs" \
//   CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C target-feature=+simd128" \
//   cargo test -p kiln-kernels --lib --target wasm32-wasip1
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";

const [file, ...args] = process.argv.slice(2);
if (!file) {
  console.error("usage: node wasi-run.mjs PROGRAM.wasm [ARGS...]");
  process.exit(2);
}
// The whole file system is visible to the program (tests read the real models by absolute path).
const wasi = new WASI({ version: "preview1", args: [file, ...args], env: process.env, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(readFileSync(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exit(wasi.start(instance));
