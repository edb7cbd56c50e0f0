// kiln playground: chat (streamed over SSE) and embeddings (similarity heatmap) against this
// server, or (in-browser mode) with kiln's WebAssembly build in a Web Worker
// (/playground-worker.js), the model files downloaded from this server once and cached.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;
// Files of each served model ({name, size} lists), from /v1/models/{id}/files.
const modelFiles = new Map();
// The last vectors shown in the heatmap and where they were computed (read by the browser tests).
window.kilnLastEmbeddings = null;

// ---- in-browser (WASM) mode ----
const wasm = {
  worker: null,
  ready: null, // a promise settled when the worker has instantiated the module
  simd128: false,
  pending: new Map(), // request id -> {onToken, resolve, reject}
  loads: new Map(), // kind -> {model, promise, resolve, reject}
  nextId: 1,
  chatId: null,
};

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function setNote(text, isError) {
  $("wasm-note").textContent = text;
  $("wasm-note").classList.toggle("error", Boolean(isError));
}

function startWorker() {
  if (wasm.worker) return wasm.ready;
  wasm.worker = new Worker("/playground-worker.js", { type: "module" });
  wasm.ready = new Promise((resolve, reject) => {
    wasm.worker.onerror = (e) => reject(new Error(e.message || "the worker failed to start"));
    wasm.worker.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === "ready") {
        wasm.simd128 = msg.simd128;
        resolve();
        return;
      }
      if (msg.type === "error" && msg.id === undefined && msg.kind === undefined) {
        reject(new Error(msg.message));
      }
      onWorkerMessage(msg);
    };
  });
  return wasm.ready;
}

function onWorkerMessage(msg) {
  if (msg.type === "progress") {
    const p = $("wasm-progress");
    p.hidden = false;
    p.max = msg.total;
    p.value = msg.loaded;
    const mb = (n) => (n / 1e6).toFixed(1);
    setNote(`${msg.cached ? "reading" : "downloading"} ${msg.model}: ${mb(msg.loaded)} of ${mb(msg.total)} MB`);
  } else if (msg.type === "loaded") {
    const l = wasm.loads.get(msg.kind);
    if (l) l.resolve(msg);
  } else if (msg.type === "embedded") {
    const p = wasm.pending.get(msg.id);
    wasm.pending.delete(msg.id);
    if (p) p.resolve(msg);
  } else if (msg.type === "token") {
    const p = wasm.pending.get(msg.id);
    if (p && p.onToken) p.onToken(msg.text);
  } else if (msg.type === "done") {
    const p = wasm.pending.get(msg.id);
    wasm.pending.delete(msg.id);
    if (p) p.resolve(msg);
  } else if (msg.type === "error") {
    const p = msg.id !== undefined && wasm.pending.get(msg.id);
    if (p) {
      wasm.pending.delete(msg.id);
      p.reject(new Error(msg.message));
    } else if (msg.kind && wasm.loads.get(msg.kind)) {
      wasm.loads.get(msg.kind).reject(new Error(msg.message));
      wasm.loads.delete(msg.kind);
    }
  }
}

// Makes sure the worker holds `model` for `kind` ("embed" or "chat"), downloading it if needed.
function wasmLoad(kind, model) {
  const current = wasm.loads.get(kind);
  if (current && current.model === model) return current.promise;
  const entry = { model };
  entry.promise = new Promise((resolve, reject) => {
    entry.resolve = resolve;
    entry.reject = reject;
  });
  wasm.loads.set(kind, entry);
  startWorker().then(() => {
    wasm.worker.postMessage({ type: "load", kind, model, files: modelFiles.get(model) || [] });
  }, entry.reject);
  return entry.promise;
}

function wasmRequest(message, onToken) {
  const id = wasm.nextId++;
  return {
    id,
    promise: new Promise((resolve, reject) => {
      wasm.pending.set(id, { onToken, resolve, reject });
      wasm.worker.postMessage({ ...message, id });
    }),
  };
}

// Loads the selected models into the worker, showing progress; returns when both are ready.
async function prepareWasm() {
  const started = performance.now();
  try {
    await startWorker();
    const jobs = [];
    if ($("embed-model").value) jobs.push(["embed", $("embed-model").value]);
    if ($("chat-model").value) jobs.push(["chat", $("chat-model").value]);
    for (const [kind, model] of jobs) await wasmLoad(kind, model);
    $("wasm-progress").hidden = true;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setNote(`Running in this browser (WebAssembly${wasm.simd128 ? " SIMD128" : ""}, in a worker): ` +
      `${jobs.map(([, m]) => m).join(" and ")} ready in ${seconds} s. The model files stay cached in this browser.`);
    document.body.dataset.wasm = "ready";
  } catch (e) {
    document.body.dataset.wasm = "error";
    $("wasm-progress").hidden = true;
    setNote(`In-browser mode failed: ${e.message}`, true);
    throw e;
  }
}

async function checkWasm() {
  const input = document.querySelector('input[name="mode"][value="wasm"]');
  try {
    const resp = await fetch("/wasm/kiln_wasm.js", { method: "HEAD" });
    if (!resp.ok) throw new Error("not built");
    input.disabled = false;
    setNote("Everything runs on the server. Switch to “run in this browser” to download the models " +
      "once and run them here with WebAssembly.");
  } catch (_) {
    $("wasm-label").title = "this server has no WebAssembly build";
    setNote("In-browser (WASM) mode is not available: this server has no WebAssembly build " +
      "(build it with scripts/build-wasm.sh). Everything runs on the server.");
  }
}

function onModeChange() {
  document.body.dataset.mode = mode();
  if (mode() === "wasm") {
    document.body.dataset.wasm = "loading";
    prepareWasm().catch(() => {});
  } else {
    $("wasm-progress").hidden = true;
    setNote("Everything runs on the server.");
  }
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    return body.error ? body.error.message : `HTTP ${resp.status}`;
  } catch (_) {
    return `HTTP ${resp.status}`;
  }
}

async function loadModels() {
  const resp = await fetch("/v1/models");
  const list = (await resp.json()).data;
  for (const m of list) {
    const files = await (await fetch(`/v1/models/${encodeURIComponent(m.id)}/files`)).json();
    modelFiles.set(m.id, files.data || []);
    const select = files.kind === "chat" ? $("chat-model") : $("embed-model");
    select.add(new Option(m.id, m.id));
  }
  $("send").disabled = $("chat-model").options.length === 0;
  $("embed").disabled = $("embed-model").options.length === 0;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").append(div);
  return div;
}

// Reads an SSE body and calls onData with each parsed `data:` payload until `[DONE]`.
async function readSse(body, onData) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

// Streams a reply from the worker into `out`; resolves with the worker's "done" message.
async function wasmChat(out, setReply) {
  await wasmLoad("chat", $("chat-model").value);
  let reply = "";
  const req = wasmRequest({
    type: "chat",
    messages: history,
    options: {
      temperature: Number($("temperature").value),
      max_tokens: Number($("max-tokens").value),
      seed: Math.floor(Math.random() * 2 ** 32),
    },
  }, (text) => {
    reply += text;
    setReply(reply);
    out.textContent = reply;
    $("messages").scrollTop = $("messages").scrollHeight;
  });
  wasm.chatId = req.id;
  return req.promise;
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("chat-status").textContent = mode() === "wasm" ? "generating in this browser…" : "generating…";
  document.body.dataset.chat = "streaming";
  let reply = "";
  let tokens = 0;
  const started = performance.now();
  try {
    if (mode() === "wasm") {
      const done = await wasmChat(out, (r) => { reply = r; });
      const seconds = (performance.now() - started) / 1000;
      $("chat-status").textContent = done.reason === "cancelled"
        ? "stopped"
        : `${done.tokens} tokens in ${seconds.toFixed(1)} s in this browser ` +
          `(${(done.tokens / ((done.ms - (done.firstMs || 0)) / 1000 || 1)).toFixed(1)} tokens/s after the first)`;
      document.body.dataset.chat = done.reason;
      return;
    }
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      signal: controller.signal,
      body: JSON.stringify({
        model: $("chat-model").value,
        messages: history,
        stream: true,
        temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!resp.ok) throw new Error(await apiError(resp));
    await readSse(resp.body, (chunk) => {
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        reply += delta.content;
        tokens += 1;
        out.textContent = reply;
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    });
    const seconds = (performance.now() - started) / 1000;
    $("chat-status").textContent = `${tokens} chunks in ${seconds.toFixed(1)} s`;
    document.body.dataset.chat = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      $("chat-status").textContent = "stopped";
      document.body.dataset.chat = "cancelled";
    } else {
      out.classList.add("error");
      out.textContent = e.message;
      $("chat-status").textContent = "";
      document.body.dataset.chat = "error";
    }
  } finally {
    if (reply) history.push({ role: "assistant", content: reply });
    else history.pop();
    controller = null;
    wasm.chatId = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

function drawHeatmap(sentences, vectors) {
  const table = $("heatmap");
  table.replaceChildren();
  const head = table.insertRow();
  head.append(document.createElement("th"));
  sentences.forEach((s, i) => {
    const th = document.createElement("th");
    th.textContent = `${i + 1}`;
    th.title = s;
    head.append(th);
  });
  sentences.forEach((s, i) => {
    const row = table.insertRow();
    const th = document.createElement("th");
    th.textContent = `${i + 1}. ${s}`;
    th.title = s;
    row.append(th);
    vectors.forEach((_, j) => {
      const sim = cosine(vectors[i], vectors[j]);
      const cell = row.insertCell();
      cell.textContent = sim.toFixed(2);
      const t = Math.max(0, Math.min(1, sim));
      cell.style.background = `hsl(${210 - 210 * t}, 70%, ${92 - 40 * t}%)`;
    });
  });
}

async function embed() {
  const sentences = $("sentences").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (sentences.length === 0) return;
  $("embed-status").textContent = "embedding…";
  try {
    if (mode() === "wasm") {
      const model = $("embed-model").value;
      await wasmLoad("embed", model);
      const done = await wasmRequest({ type: "embed", texts: sentences }).promise;
      const vectors = done.vectors.map((v) => Array.from(v));
      drawHeatmap(sentences, vectors);
      window.kilnLastEmbeddings = { mode: "wasm", model, sentences, vectors };
      $("embed-status").textContent = `${done.ms.toFixed(1)} ms in this browser`;
      return;
    }
    const resp = await fetch("/v1/embeddings", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: $("embed-model").value, input: sentences }),
    });
    if (!resp.ok) throw new Error(await apiError(resp));
    const body = await resp.json();
    const vectors = body.data.map((d) => d.embedding);
    drawHeatmap(sentences, vectors);
    window.kilnLastEmbeddings = { mode: "server", model: body.model, sentences, vectors };
    $("embed-status").textContent = `${body.usage.prompt_tokens} tokens`;
  } catch (e) {
    $("embed-status").textContent = e.message;
  }
}

$("chat-form").addEventListener("submit", sendChat);
$("stop").addEventListener("click", () => {
  if (wasm.chatId !== null) wasm.worker.postMessage({ type: "stop", id: wasm.chatId });
  else if (controller) controller.abort();
});
for (const input of document.querySelectorAll('input[name="mode"]')) {
  input.addEventListener("change", onModeChange);
}
for (const id of ["chat-model", "embed-model"]) {
  $(id).addEventListener("change", () => { if (mode() === "wasm") onModeChange(); });
}
$("clear").addEventListener("click", () => {
  history.length = 0;
  $("messages").replaceChildren();
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("chat-form").requestSubmit();
  }
});
$("embed").addEventListener("click", embed);
document.body.dataset.mode = mode();
loadModels()
  .then(checkWasm)
  .then(() => { document.body.dataset.loaded = "true"; })
  .catch((e) => { $("chat-status").textContent = `cannot list models: ${e.message}`; });
