// tempscope playground: draws the server's next-token logits at any temperature, and wires the
// temperature lab (lab.js: side by side, branches; step.js; tree.js) to the controls.
// The softmax for the slider runs here, on the logits /v1/distribution returned, so moving the
// slider needs no request; anything that depends on the sampler chain comes from the server.
"use strict";

import {
  $, fmtT, getJSON, parseTemps, pct, postJSON, setStatus, sliderToT, softmaxStats, tToSlider,
  visible,
} from "./util.js";
import { activeFields, loadSamplers, onChange, onTemperature, samplerFields } from "./samplers.js";
import {
  busy, drawBranches, generate, initCalibration, onRun, redrawStrips, setEos, sideBySide, stop,
} from "./lab.js";
import { closeStep, initStep, isOpen, openStep } from "./step.js";
import { drawLegend, hideTip, repaint, setVocab, showTip } from "./tokens.js";
import { expandTree, onNewPrompt } from "./tree.js";
import { applyLink, applyLinkSamplers, copyLink, readLink, writeLink } from "./share.js";

const state = {
  logits: null,      // Float64Array (V,) last-position logits
  tokens: [],        // [{token_id, text, logit}] top-N by logit: the order at every T
  promptKey: "",     // prompt + chat flag the logits belong to
  processed: null,   // {temperatures: [...]} from the server, or null when samplers are off
  processedFor: "",  // request key the processed answer belongs to
  timer: 0,
  loads: 0,          // distribution requests sent
};

function currentT() {
  const v = parseFloat($("temp-value").value);
  return Number.isFinite(v) && v >= 0 ? v : sliderToT(+$("temp-slider").value);
}
function setT(t) {
  $("temp-value").value = String(t);
  $("temp-slider").value = tToSlider(t);
  syncTempLabel();
}
function samplersOn() { return Object.keys(activeFields()).length > 0; }

// ---- the next-token chart --------------------------------------------------------------------
function processedAt(t) {
  if (!state.processed) return null;
  return state.processed.temperatures.find((r) => Math.abs(r.temperature - t) < 1e-9) || null;
}

function drawChart() {
  if (!state.logits) return;
  const t = currentT();
  const st = softmaxStats(state.logits, t);
  const proc = processedAt(t);
  const on = samplersOn();
  const n = Math.min(+$("top-n").value || 12, state.tokens.length);
  $("chart-title").textContent = "T = " + fmtT(t);
  $("stat-entropy").textContent = st.entropy.toFixed(3) + " nats";
  $("stat-eff").textContent = st.eff < 100 ? st.eff.toFixed(2) : Math.round(st.eff).toLocaleString();
  const top = state.tokens[0];
  $("stat-top").textContent = top ? `${visible(top.text)} ${pct(st.prob(top.token_id))}` : "–";
  $("stat-proc-wrap").hidden = !on;
  $("legend-proc").hidden = !on;
  $("legend").classList.toggle("single", !on);
  if (on) {
    $("stat-proc").textContent = proc
      ? `${proc.processed.kept.toLocaleString()} tokens kept, entropy ${proc.processed.entropy.toFixed(3)}, eff. vocab ${proc.processed.effective_vocab.toFixed(2)}`
      : "updating…";
  }
  const chart = $("chart");
  chart.textContent = "";
  chart.classList.toggle("stale", on && !proc);
  for (let i = 0; i < n; i++) {
    const tok = state.tokens[i];
    const p = st.prob(tok.token_id);
    const row = document.createElement("div");
    row.className = "row"; row.setAttribute("role", "row");
    const label = document.createElement("span");
    label.className = "tok"; label.setAttribute("role", "rowheader");
    label.textContent = visible(tok.text); label.title = `id ${tok.token_id}, logit ${tok.logit.toFixed(3)}`;
    const bars = document.createElement("span");
    bars.className = "bars"; bars.setAttribute("role", "cell");
    bars.appendChild(bar("raw", p));
    let text = pct(p);
    if (on && proc) {
      const q = proc.probs[i];
      bars.appendChild(bar("proc", q));
      text += " → " + pct(q);
    }
    const val = document.createElement("span");
    val.className = "val"; val.setAttribute("role", "cell"); val.textContent = text;
    row.append(label, bars, val);
    chart.appendChild(row);
  }
  drawCompare(n);
}

function bar(kind, p) {
  const b = document.createElement("span");
  b.className = "bar " + kind;
  b.style.width = (100 * p).toFixed(3) + "%";
  b.dataset.p = p.toFixed(6);
  return b;
}

function drawCompare(n) {
  const temps = parseTemps($("compare").value);
  const table = $("compare-table");
  table.textContent = "";
  if (!temps.length || !state.logits) return;
  const stats = temps.map((t) => softmaxStats(state.logits, t));
  const head = table.createTHead().insertRow();
  const th0 = document.createElement("th"); th0.textContent = "token"; th0.scope = "col";
  head.appendChild(th0);
  temps.forEach((t, j) => {
    const th = document.createElement("th"); th.scope = "col";
    th.append(`T = ${fmtT(t)}`, document.createElement("br"));
    const small = document.createElement("small");
    small.textContent = `H ${stats[j].entropy.toFixed(2)} · eff ${stats[j].eff < 100 ? stats[j].eff.toFixed(1) : Math.round(stats[j].eff)}`;
    th.appendChild(small);
    head.appendChild(th);
  });
  const body = table.createTBody();
  for (let i = 0; i < n; i++) {
    const tok = state.tokens[i];
    const tr = body.insertRow();
    const th = document.createElement("th"); th.scope = "row"; th.className = "tok";
    th.textContent = visible(tok.text);
    tr.appendChild(th);
    stats.forEach((st) => {
      const p = st.prob(tok.token_id);
      const td = tr.insertCell();
      const track = document.createElement("span"); track.className = "track";
      track.appendChild(bar("raw", p));
      const v = document.createElement("span"); v.className = "val"; v.textContent = pct(p);
      td.append(track, v);
    });
  }
}

// ---- server calls ----------------------------------------------------------------------------
function promptKey() { return JSON.stringify([$("prompt").value, $("chat").checked]); }

async function loadDistribution() {
  const key = promptKey();
  const mine = ++state.loads;  // answers can arrive out of order: only the latest counts
  setStatus("reading the model…");
  try {
    const data = await postJSON("/v1/distribution", {
      prompt: $("prompt").value, chat: $("chat").checked, temperatures: [1], top: 50,
      return_logits: true,
    });
    if (mine !== state.loads) return;
    state.logits = Float64Array.from(data.logits);
    state.tokens = data.tokens;
    state.promptKey = key;
    state.processed = null; state.processedFor = "";
    setStatus(`${data.prompt_tokens} prompt tokens, vocabulary ${data.vocab_size.toLocaleString()}`);
    drawChart();
    scheduleProcessed(0);
  } catch (err) {
    setStatus("error: " + err.message, true);
  }
}

// The sampler chain lives on the server: ask for the processed distribution when the controls
// settle (debounced), never once per slider step.
function scheduleProcessed(delay = 150) {
  clearTimeout(state.timer);
  state.timer = setTimeout(loadProcessed, delay);
}

async function loadProcessed() {
  if (!state.logits || !samplersOn()) { state.processed = null; drawChart(); return; }
  const temps = [currentT(), ...parseTemps($("compare").value)];
  const body = { prompt: $("prompt").value, chat: $("chat").checked, temperatures: temps, top: 50, ...samplerFields() };
  const key = JSON.stringify(body);
  if (key === state.processedFor) return;
  try {
    const data = await postJSON("/v1/distribution", body);
    if (promptKey() !== state.promptKey) return;
    state.processed = data; state.processedFor = key;
    drawChart();
  } catch (err) {
    setStatus("error: " + err.message, true);
  }
}

// ---- wiring ----------------------------------------------------------------------------------
function onSlider() {
  const t = sliderToT(+$("temp-slider").value);
  $("temp-value").value = t === 0 ? "0" : +t.toPrecision(3);
  syncTempLabel();
  drawChart();              // instant: client-side softmax
  scheduleProcessed();      // samplers: one request once the slider rests
}
function syncTempLabel() {
  const t = currentT();
  $("temp-out").textContent = fmtT(t);
  $("temp-slider").setAttribute("aria-valuetext", "temperature " + fmtT(t));
}

function wireTokens() {
  // Tokens anywhere in the results: hover or focus shows alternatives, click or Enter opens
  // the step.
  const results = document.querySelector(".results");
  results.addEventListener("mouseover", showTip);
  results.addEventListener("focusin", showTip);
  results.addEventListener("mouseout", (e) => { if (e.target.closest(".t")) hideTip(); });
  results.addEventListener("focusout", hideTip);
  const open = (span) => openStep(span.dataset.branch, +span.dataset.index, span);
  results.addEventListener("click", (e) => {
    const span = e.target.closest(".t[data-branch]");
    if (span) open(span);
  });
  results.addEventListener("keydown", (e) => {
    const span = e.target.closest && e.target.closest(".t[data-branch]");
    if (span && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); hideTip(); open(span); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (isOpen()) closeStep(); else hideTip();
  });
}

async function loadInfo() {
  try {
    const info = await getJSON("/v1/info");
    $("model-name").textContent = info.model;
    const f = info.facts || {};
    if (f.parameters) {
      const size = f.parameters >= 1e6 ? (f.parameters / 1e6).toFixed(1) + "M" : (f.parameters / 1e3).toFixed(1) + "K";
      $("model-facts").textContent = `· ${size} parameters · vocabulary ${f.vocab_size.toLocaleString()} · context ${f.context_length}`;
    }
    setVocab(f.vocab_size);
    setEos(Object.entries(f.special_token_ids || {}).filter(([k]) => k.startsWith("eos")).map(([, v]) => v));
    if (f.has_chat_template === false) $("chat").parentElement.title = "no chat template: a plain role: text transcript is used";
    if (info.limits) $("max-tokens").max = info.limits.max_tokens;
    return true;
  } catch (err) {
    if (/401|API key/.test(err.message)) {
      setStatus("this server needs an API key: open “API key” below the controls", true);
      $("key-box").open = true;
      return false;
    }
    return true;  // the distribution call reports the problem
  }
}

async function init() {
  $("temp-slider").addEventListener("input", onSlider);
  $("temp-value").addEventListener("input", () => {
    $("temp-slider").value = tToSlider(currentT());
    syncTempLabel(); drawChart(); scheduleProcessed();
  });
  onTemperature((t) => { setT(t); drawChart(); });
  initCalibration((t) => { setT(t); drawChart(); scheduleProcessed(); });
  onChange(() => { drawChart(); scheduleProcessed(300); });
  for (const id of ["top-k", "top-p", "min-p", "compare"]) {
    $(id).addEventListener("input", () => { drawChart(); scheduleProcessed(300); });
  }
  $("top-n").addEventListener("input", drawChart);
  let promptTimer = 0;  // a new prompt needs new logits: fetch once typing pauses
  $("prompt").addEventListener("input", () => { clearTimeout(promptTimer); promptTimer = setTimeout(loadDistribution, 600); });
  $("chat").addEventListener("change", loadDistribution);
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); loadDistribution(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); loadDistribution(); }
  });
  $("generate").addEventListener("click", () => generate(currentT()));
  $("side").addEventListener("click", sideBySide);
  $("stop").addEventListener("click", stop);
  $("share").addEventListener("click", () => copyLink(currentT()));
  $("tree-expand").addEventListener("click", () => expandTree(currentT()));
  onNewPrompt(loadDistribution);
  onRun((run) => writeLink(currentT(), run));
  for (const id of ["colour-mode", "mode"]) {
    $(id).addEventListener("change", () => { repaint(); redrawStrips(); drawBranches(); });
  }
  wireTokens();
  initStep();
  drawLegend();

  const link = readLink();
  if (link) applyLink(link, setT);
  syncTempLabel();
  if (!(await loadInfo())) return;
  drawLegend();
  await loadSamplers();
  if (link) applyLinkSamplers(link);
  await loadDistribution();
  if (link && link.view === "side") sideBySide();
  else if (link && link.view === "gen") generate(currentT());
  if (!busy()) writeLink(currentT());
}

init();
