// The page of chute's reference service: an export, the live log, downloads and metrics, each straight from the
// service's own endpoints. Plain browser JavaScript, no build step and no dependency.
"use strict";

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat("en-US");

// Shows a number, and keeps it exact in data-value for whoever reads the page (tests, scripts).
function show(element, value, text) {
  element.dataset.value = String(value);
  element.textContent = text ?? numbers.format(value);
}

function setState(element, state, text) {
  element.dataset.state = state;
  element.textContent = text ?? state;
}

function bytesText(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

// ---- Export: fetch + ReadableStream, NDJSON parsed line by line as the chunks arrive ----

const exportState = { datasets: new Map(), controller: null };

async function loadDatasets() {
  const response = await fetch("/exports");
  const select = $("export-dataset");
  for (const dataset of await response.json()) {
    exportState.datasets.set(dataset.name, dataset);
    select.add(new Option(`${dataset.name} (${numbers.format(dataset.rows)} rows)`, dataset.name));
  }
}

async function runExport(event) {
  event.preventDefault();
  const dataset = exportState.datasets.get($("export-dataset").value);
  if (!dataset || exportState.controller) return;
  const controller = new AbortController();
  exportState.controller = controller;
  $("export-start").disabled = true;
  $("export-stop").disabled = false;
  const progress = $("export-progress");
  progress.max = Math.max(dataset.rows, 1);
  progress.value = 0;
  show($("export-total"), dataset.rows);
  setState($("export-state"), "running");
  let rows = 0;
  const started = performance.now();
  let painted = 0;
  const paint = () => {
    const seconds = (performance.now() - started) / 1000;
    progress.value = rows;
    show($("export-rows"), rows);
    if (seconds > 0) show($("export-rate"), Math.round(rows / seconds));
  };
  try {
    const response = await fetch(`/exports/${encodeURIComponent(dataset.name)}?format=ndjson`, {
      signal: controller.signal,
      headers: { accept: "application/x-ndjson" },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const count = (line) => {
      if (!line || line.startsWith('{"@')) return; // control lines (@resume, @end) are not records
      JSON.parse(line);
      rows += 1;
    };
    // Each chunk is parsed as it arrives; only a line cut by the chunk's end waits for the next one.
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const lines = (pending + value).split("\n");
      pending = lines.pop();
      lines.forEach(count);
      const now = performance.now();
      if (now - painted > 100) {
        painted = now;
        paint();
      }
    }
    count(pending);
    paint();
    // A cut connection rejects above; a complete body must also hold every row the listing promised.
    if (rows === dataset.rows) setState($("export-state"), "done", `done in ${((performance.now() - started) / 1000).toFixed(2)} s`);
    else setState($("export-state"), "failed", `${numbers.format(rows)} of ${numbers.format(dataset.rows)} rows`);
  } catch (error) {
    paint();
    setState($("export-state"), controller.signal.aborted ? "stopped" : "failed",
      controller.signal.aborted ? "stopped" : `failed: ${error.message}`);
  } finally {
    exportState.controller = null;
    $("export-start").disabled = false;
    $("export-stop").disabled = true;
  }
}

// ---- Live log: EventSource, with a connection indicator that counts reconnects ----

const FEED_LIMIT = 200;
const feed = { source: null, opened: 0, reconnects: 0, retry: null };

function feedEntry(kind, text, level) {
  const list = $("feed-list");
  const item = document.createElement("li");
  item.className = level ? `${kind} ${level}` : kind;
  item.textContent = text;
  list.prepend(item);
  while (list.childElementCount > FEED_LIMIT) list.lastElementChild.remove();
}

function isPolling(record) {
  return record.path === "/metrics";
}

function connectFeed() {
  const source = new EventSource("/stream-logs");
  feed.source = source;
  source.addEventListener("open", () => {
    feed.opened += 1;
    if (feed.opened > 1) feed.reconnects += 1;
    show($("feed-reconnects"), feed.reconnects);
    setState($("feed-status"), "open", feed.reconnects ? `open (reconnected ${feed.reconnects}×)` : "open");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (an error status): start over with a new EventSource after a pause.
      setState($("feed-status"), "closed", "closed, retrying");
      source.close();
      clearTimeout(feed.retry);
      feed.retry = setTimeout(connectFeed, 2000);
    } else {
      setState($("feed-status"), "reconnecting");
    }
  });
  source.addEventListener("log", (event) => {
    const record = JSON.parse(event.data);
    feedEntry("log", `${record.time.slice(11, 23)} ${record.level} ${record.logger}: ${record.message}`, record.level);
  });
  source.addEventListener("request", (event) => {
    const record = JSON.parse(event.data);
    if (isPolling(record) && $("feed-quiet").checked) return;
    feedEntry("request", `${record.time.slice(11, 23)} ${record.method} ${record.path} ${record.status} `
      + `${bytesText(record.bytes)} ${record.duration_ms} ms ${record.outcome} (pid ${record.pid})`);
  });
  source.addEventListener("reset", (event) => feedEntry("log", `feed reset: ${event.data}`, "warning"));
}

// ---- Downloads: the files of /files/ with their sizes ----

async function loadFiles() {
  const response = await fetch("/files/");
  const list = $("files-list");
  for (const file of await response.json()) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = file.url;
    link.download = file.name;
    link.textContent = file.name;
    const size = document.createElement("span");
    size.className = "size";
    show(size, file.size, bytesText(file.size));
    item.append(link, size);
    list.append(item);
  }
}

// ---- Metrics: Prometheus text from /metrics, a few sums ----

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const found = SAMPLE.exec(line);
    if (!found) continue;
    const labels = {};
    for (const [, name, value] of (found[2] ?? "").matchAll(LABEL)) labels[name] = value;
    samples.push({ name: found[1], labels, value: Number(found[3]) });
  }
  return samples;
}

function total(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

async function pollMetrics() {
  try {
    const response = await fetch("/metrics", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const samples = parseMetrics(await response.text());
    show($("metric-active"), total(samples, "chute_streams_active"));
    const sent = total(samples, "chute_response_bytes_total");
    show($("metric-bytes"), sent, bytesText(sent));
    show($("metric-responses"), total(samples, "chute_responses_total"));
    show($("metric-left"), total(samples, "chute_responses_total", (l) => l.outcome === "client left"));
    show($("metric-failed"), total(samples, "chute_responses_total",
      (l) => l.outcome === "error" || l.outcome === "send timeout"));
    const count = total(samples, "chute_time_to_first_byte_seconds_count");
    const mean = count ? total(samples, "chute_time_to_first_byte_seconds_sum") / count : 0;
    show($("metric-ttfb"), mean, count ? `${(mean * 1000).toFixed(1)} ms` : "–");
    show($("metric-subscribers"), total(samples, "chute_sse_subscribers"));
  } catch {
    // The service is away (restarting): keep the last numbers, try again on the next tick.
  }
}

// ---- Start ----

$("export-form").addEventListener("submit", runExport);
$("export-stop").addEventListener("click", () => exportState.controller?.abort());
connectFeed();
loadDatasets().catch((error) => setState($("export-state"), "failed", `no datasets: ${error.message}`));
loadFiles().catch(() => {});
pollMetrics();
setInterval(pollMetrics, 2000);
