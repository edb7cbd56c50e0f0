// kiln playground, in-browser mode: a module Web Worker that downloads a model's files from
// the server once (kept in the browser's Cache Storage), loads them into kiln's WebAssembly
// build (/wasm/kiln_wasm.js), and runs embeddings and streaming chat off the page's thread.
//
// Messages in:  {type: "load", kind: "embed"|"chat", model, files: [{name, size}], headers}
//               {type: "embed", id, texts}
//               {type: "chat", id, messages, options}
//               {type: "stop", id}
// Messages out: {type: "ready", simd128}, {type: "progress", kind, model, loaded, total, cached}
//               {type: "loaded", kind, model, ms}, {type: "embedded", id, vectors, ms}
//               {type: "token", id, text}, {type: "done", id, reason, tokens, ms, firstMs}
//               {type: "error", id?, kind?, message}
import init, { Chat, Embedder, ModelFiles, simd128 } from "/wasm/kiln_wasm.js";

const CACHE = "kiln-model-files-v1";
const models = { embed: null, chat: null };
const loaded = { embed: null, chat: null };
const stopped = new Set();
// Jobs run one at a time, in order, after the WebAssembly module is instantiated.
let queue = init().then(
  () => self.postMessage({ type: "ready", simd128: simd128() }),
  (e) => self.postMessage({ type: "error", message: `loading kiln_wasm: ${e.message || e}` }),
);

// Yields to the worker's event loop so that a "stop" message gets handled between tokens
// (a MessageChannel round trip, without setTimeout's clamping).
const channel = new MessageChannel();
function yieldToEvents() {
  return new Promise((resolve) => {
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(0);
  });
}

// The bytes of one model file: from Cache Storage when it holds the same size, otherwise
// downloaded (reporting progress through onBytes) and stored there.
async function fileBytes(url, size, headers, onBytes) {
  const cache = self.caches ? await self.caches.open(CACHE) : null;
  if (cache) {
    const hit = await cache.match(url);
    if (hit) {
      const buf = await hit.arrayBuffer();
      if (buf.byteLength === size) {
        onBytes(buf.byteLength, true);
        return new Uint8Array(buf);
      }
      await cache.delete(url);
    }
  }
  const resp = await fetch(url, { headers });
  if (!resp.ok) {
    let message = `HTTP ${resp.status}`;
    try { message = (await resp.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(`downloading ${url}: ${message}`);
  }
  const out = new Uint8Array(size);
  let at = 0;
  const reader = resp.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (at + value.length > size) throw new Error(`${url} is larger than the listed ${size} bytes`);
    out.set(value, at);
    at += value.length;
    onBytes(value.length, false);
  }
  if (at !== size) throw new Error(`${url}: got ${at} of ${size} bytes`);
  if (cache) {
    await cache.put(url, new Response(out, { headers: { "content-type": "application/octet-stream" } }));
  }
  return out;
}

async function load({ kind, model, files, headers }) {
  if (loaded[kind] === model) {
    self.postMessage({ type: "loaded", kind, model, ms: 0 });
    return;
  }
  if (models[kind]) {
    models[kind].free();
    models[kind] = null;
    loaded[kind] = null;
  }
  const total = files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  let cachedAll = true;
  let lastReport = 0;
  const report = (n, cached) => {
    done += n;
    cachedAll = cachedAll && cached;
    const now = performance.now();
    if (now - lastReport > 50 || done === total) {
      lastReport = now;
      self.postMessage({ type: "progress", kind, model, loaded: done, total, cached: cachedAll });
    }
  };
  const started = performance.now();
  const base = `/v1/models/${encodeURIComponent(model)}/files/`;
  const contents = [];
  for (const f of files) {
    const url = base + f.name.split("/").map(encodeURIComponent).join("/");
    contents.push([f.name, await fileBytes(url, f.size, headers || {}, report)]);
  }
  if (kind === "embed") {
    const set = new ModelFiles();
    for (const [name, bytes] of contents) set.add(name, bytes);
    contents.length = 0;
    models.embed = new Embedder(set);
  } else {
    const gguf = contents.find(([name]) => name.endsWith(".gguf"));
    if (!gguf) throw new Error(`model ${model} has no .gguf file`);
    models.chat = new Chat(gguf[1]);
  }
  loaded[kind] = model;
  self.postMessage({ type: "loaded", kind, model, ms: performance.now() - started });
}

function embed({ id, texts }) {
  if (!models.embed) throw new Error("no embedding model is loaded");
  const started = performance.now();
  const vectors = models.embed.embed(texts);
  self.postMessage({ type: "embedded", id, vectors, ms: performance.now() - started });
}

async function chat({ id, messages, options }) {
  if (!models.chat) throw new Error("no chat model is loaded");
  const started = performance.now();
  const gen = models.chat.start(JSON.stringify(messages), JSON.stringify(options || {}));
  let firstMs = null;
  try {
    for (;;) {
      await yieldToEvents();
      if (stopped.has(id)) {
        gen.cancel();
        break;
      }
      const piece = gen.next();
      if (piece === undefined) break;
      if (firstMs === null) firstMs = performance.now() - started;
      if (piece) self.postMessage({ type: "token", id, text: piece });
    }
    self.postMessage({
      type: "done", id, reason: gen.finishReason(), tokens: gen.completionTokens(),
      promptTokens: gen.promptTokens(), ms: performance.now() - started, firstMs,
    });
  } finally {
    stopped.delete(id);
    gen.free();
  }
}

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === "stop") {
    stopped.add(msg.id);
    return;
  }
  // A stop message is handled at once (while a chat job yields); other jobs queue.
  queue = queue.then(async () => {
    try {
      if (msg.type === "load") await load(msg);
      else if (msg.type === "embed") embed(msg);
      else if (msg.type === "chat") await chat(msg);
    } catch (e) {
      self.postMessage({ type: "error", id: msg.id, kind: msg.kind, message: String(e && e.message || e) });
    }
  });
};
