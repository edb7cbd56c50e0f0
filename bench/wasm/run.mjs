// kiln in the browser vs native kiln: one all-MiniLM-L6-v2 embedding and SmolLM2-135M-Instruct
// (Q4_1 GGUF) greedy decoding, in headless Debian chromium (kiln-wasm with and without SIMD128)
// and natively (the same kiln-wasm code paths: crates/kiln-wasm/examples/bench_native.rs).
// transformers.js is measured by bench/wasm/transformers.mjs when it is installed.
//
//   scripts/build-wasm.sh && scripts/build-wasm.sh --no-simd
//   cargo build --release -p kiln-cli && cargo build --release -p kiln-wasm --example bench_native
//   (cd scripts/browser && npm ci) && node bench/wasm/run.mjs [--runs N]
//
// Prints a JSON object with every figure (medians) and writes it to target/bench-wasm.json.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, writeFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(root, "scripts/browser/package.json"));
const { chromium } = require("playwright-core");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const kiln = process.env.KILN || path.join(targetDir, "release/kiln");
const nativeBench = path.join(targetDir, "release/examples/bench_native");
const runsArg = process.argv.indexOf("--runs");
const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;

const SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank.";
const MESSAGES = [{ role: "user", content: "Write a short story about a lighthouse keeper." }];

async function withServer(wasmDir, fn) {
  const port = 19000 + Math.floor(Math.random() * 1000);
  const base = `http://127.0.0.1:${port}`;
  const server = spawn(kiln, ["serve", "--port", String(port), "--wasm-dir", wasmDir],
    { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  try {
    for (let i = 0; ; i++) {
      try { if ((await fetch(`${base}/health`)).ok) break; } catch (_) { /* starting */ }
      if (i > 600) throw new Error("kiln serve did not start");
      await new Promise((r) => setTimeout(r, 200));
    }
    return await fn(base);
  } finally {
    server.kill("SIGTERM");
  }
}

// Runs in the page: loads kiln-wasm and both models on the main thread, then times them.
async function browserBench({ runs, sentence, messages }) {
  const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const m = await import("/wasm/kiln_wasm.js");
  await m.default();
  const get = async (model, name) =>
    new Uint8Array(await (await fetch(`/v1/models/${model}/files/${name}`)).arrayBuffer());
  const list = async (model) => (await (await fetch(`/v1/models/${model}/files`)).json()).data;
  const files = new m.ModelFiles();
  for (const f of await list("all-MiniLM-L6-v2")) files.add(f.name, await get("all-MiniLM-L6-v2", f.name));
  let t = performance.now();
  const emb = new m.Embedder(files);
  const embedLoadMs = performance.now() - t;
  for (let i = 0; i < 5; i++) emb.embedOne(sentence);
  const embedMs = [];
  for (let i = 0; i < 50; i++) {
    t = performance.now();
    emb.embedOne(sentence);
    embedMs.push(performance.now() - t);
  }
  const gguf = (await list("SmolLM2-135M-Instruct")).find((f) => f.name.endsWith(".gguf")).name;
  const bytes = await get("SmolLM2-135M-Instruct", gguf);
  t = performance.now();
  const chat = new m.Chat(bytes);
  const chatLoadMs = performance.now() - t;
  const firstMs = [], tps = [];
  let tokens = 0, promptTokens = 0;
  for (let r = 0; r < runs; r++) {
    const g = chat.start(JSON.stringify(messages), JSON.stringify({ max_tokens: 64, temperature: 0 }));
    t = performance.now();
    g.next();
    firstMs.push(performance.now() - t);
    t = performance.now();
    while (g.next() !== undefined) { /* decode */ }
    tokens = g.completionTokens() - 1;
    promptTokens = g.promptTokens();
    tps.push(tokens / ((performance.now() - t) / 1000));
    g.free();
  }
  return {
    simd128: m.simd128(),
    embed_load_ms: embedLoadMs,
    embed_ms_median: median(embedMs),
    chat_load_ms: chatLoadMs,
    chat_prompt_tokens: promptTokens,
    chat_first_token_ms_median: median(firstMs),
    decode_tokens: tokens,
    decode_tokens_per_s_median: median(tps),
  };
}

const results = {
  date: new Date().toISOString(),
  machine: `${os.cpus()[0].model}, ${os.cpus().length} logical CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
  chromium: execFileSync(process.env.CHROMIUM || "/usr/bin/chromium", ["--version"]).toString().trim(),
  runs,
  sentence: SENTENCE,
  messages: MESSAGES,
  browser: {},
  native: {},
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  for (const [name, dir] of [["wasm_simd128", "target/wasm-pkg"], ["wasm_no_simd", "target/wasm-pkg-nosimd"]]) {
    const full = path.join(root, dir);
    if (!existsSync(path.join(full, "kiln_wasm_bg.wasm"))) {
      results.browser[name] = { missing: `${dir} (build it with scripts/build-wasm.sh)` };
      continue;
    }
    results.browser[name] = await withServer(full, async (base) => {
      const page = await browser.newPage();
      await page.goto(base + "/");
      const r = await page.evaluate(browserBench, { runs, sentence: SENTENCE, messages: MESSAGES });
      await page.close();
      return r;
    });
    console.error(name, JSON.stringify(results.browser[name]));
  }
} finally {
  await browser.close();
}

if (existsSync(nativeBench)) {
  for (const [name, threads] of [["one_thread", "1"], ["all_threads", undefined]]) {
    const env = { ...process.env };
    if (threads) env.RAYON_NUM_THREADS = threads; else delete env.RAYON_NUM_THREADS;
    const out = execFileSync(nativeBench, [path.join(root, "models"), String(runs)], { env });
    results.native[name] = JSON.parse(out.toString());
    console.error(name, JSON.stringify(results.native[name]));
  }
} else {
  results.native = { missing: `${nativeBench}: cargo build --release -p kiln-wasm --example bench_native` };
}

const tjs = path.join(targetDir, "bench-wasm-transformers.json");
if (existsSync(tjs)) results.transformers_js = JSON.parse(readFileSync(tjs));
writeFileSync(path.join(targetDir, "bench-wasm.json"), JSON.stringify(results, null, 2));
console.log(JSON.stringify(results, null, 2));
