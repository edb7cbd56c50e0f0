// kiln playground: chat (streamed over SSE) and embeddings (similarity heatmap) against this server.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;

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
  $("chat-status").textContent = "generating…";
  let reply = "";
  let tokens = 0;
  const started = performance.now();
  try {
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
  } catch (e) {
    if (e.name === "AbortError") {
      $("chat-status").textContent = "stopped";
    } else {
      out.classList.add("error");
      out.textContent = e.message;
      $("chat-status").textContent = "";
    }
  } finally {
    if (reply) history.push({ role: "assistant", content: reply });
    else history.pop();
    controller = null;
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
    const resp = await fetch("/v1/embeddings", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: $("embed-model").value, input: sentences }),
    });
    if (!resp.ok) throw new Error(await apiError(resp));
    const body = await resp.json();
    drawHeatmap(sentences, body.data.map((d) => d.embedding));
    $("embed-status").textContent = `${body.usage.prompt_tokens} tokens`;
  } catch (e) {
    $("embed-status").textContent = e.message;
  }
}

$("chat-form").addEventListener("submit", sendChat);
$("stop").addEventListener("click", () => controller && controller.abort());
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
loadModels().catch((e) => { $("chat-status").textContent = `cannot list models: ${e.message}`; });
