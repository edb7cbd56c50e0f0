// The playground page in headless Debian chromium against a real `kiln serve` (server mode):
// it loads without console errors, shows an embedding heatmap, streams a chat reply, and the
// stop button ends a stream. Screenshots go to target/browser-artifacts/.
// Usage: node playground.test.mjs [path/to/kiln]
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const kiln = process.argv[2] || path.join(root, "target/release/kiln");
const artifacts = path.join(root, "target/browser-artifacts");
const port = 18000 + Math.floor(Math.random() * 2000);
const base = `http://127.0.0.1:${port}`;
mkdirSync(artifacts, { recursive: true });

const server = spawn(kiln, ["serve", "--port", String(port)], { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
const stopServer = () => server.kill("SIGTERM");

async function waitForHealth() {
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) return;
    } catch (_) { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("kiln serve did not become healthy in 120 s");
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test("page loads with both models listed", async (page) => {
  await page.goto(base + "/");
  await page.waitForFunction(() => document.getElementById("chat-model").options.length > 0
    && document.getElementById("embed-model").options.length > 0);
  assert.equal(await page.inputValue("#chat-model"), "SmolLM2-135M-Instruct");
  assert.equal(await page.inputValue("#embed-model"), "all-MiniLM-L6-v2");
});

test("embeddings heatmap: similar sentences score higher than unrelated ones", async (page) => {
  await page.click("#embed");
  await page.waitForFunction(() => document.querySelectorAll("#heatmap td").length === 9);
  const cells = await page.$$eval("#heatmap td", (tds) => tds.map((td) => Number(td.textContent)));
  assert.equal(cells[0], 1);
  assert.ok(cells[1] > cells[2] + 0.2, `cat/kitten ${cells[1]} vs cat/markets ${cells[2]}`);
});

test("chat reply streams in server mode", async (page) => {
  // Count how many times the reply text changes while it is being written.
  await page.evaluate(() => {
    window.replyUpdates = 0;
    new MutationObserver(() => { window.replyUpdates += 1; })
      .observe(document.getElementById("messages"), { subtree: true, characterData: true, childList: true });
  });
  await page.fill("#temperature", "0");
  await page.fill("#max-tokens", "40");
  await page.fill("#prompt", "What is the capital of France?");
  await page.click("#send");
  await page.waitForFunction(() => /chunks in/.test(document.getElementById("chat-status").textContent), null, { timeout: 60000 });
  const reply = await page.textContent(".msg.assistant");
  assert.ok(reply.length > 0, "empty reply");
  // Greedy decoding: the streamed text must equal the server's non-streamed answer.
  const resp = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "SmolLM2-135M-Instruct", temperature: 0, max_tokens: 40,
      messages: [{ role: "user", content: "What is the capital of France?" }] }),
  });
  assert.equal(reply, (await resp.json()).choices[0].message.content);
  assert.ok(await page.evaluate(() => window.replyUpdates) > 5, "the reply arrived in one piece, not streamed");
  await page.screenshot({ path: path.join(artifacts, "server-mode.png"), fullPage: true });
});

test("stop button stops a stream", async (page) => {
  await page.click("#clear");
  await page.fill("#temperature", "0.8");
  await page.fill("#max-tokens", "2000");
  await page.fill("#prompt", "Write a very long story about a dragon.");
  await page.click("#send");
  await page.waitForFunction(() => (document.querySelector(".msg.assistant")?.textContent.length || 0) > 20, null, { timeout: 60000 });
  await page.click("#stop");
  await page.waitForFunction(() => document.getElementById("chat-status").textContent === "stopped");
  const atStop = await page.textContent(".msg.assistant");
  await page.waitForTimeout(1000);
  assert.equal(await page.textContent(".msg.assistant"), atStop, "text kept growing after stop");
  assert.ok(await page.isEnabled("#send"));
  assert.ok(await page.isDisabled("#stop"));
});

let failed = 0;
let browser;
try {
  await waitForHealth();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  for (const { name, fn } of tests) {
    try {
      await fn(page);
      console.log(`ok   ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}\n     ${e.message}`);
    }
  }
  // "Failed to load resource" for the aborted stream is not an error of the page.
  const real = consoleErrors.filter((e) => !/aborted|ERR_ABORTED/i.test(e));
  if (real.length) {
    failed += 1;
    console.log(`FAIL no console errors\n     ${real.join("\n     ")}`);
  } else {
    console.log("ok   no console errors");
  }
} finally {
  if (browser) await browser.close();
  stopServer();
}
console.log(failed ? `${failed} browser test(s) failed` : "all browser tests passed");
process.exit(failed ? 1 : 0);
