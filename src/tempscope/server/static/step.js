// One step of a text, opened from a token: the distribution there before and after the samplers,
// redrawn at any temperature from the step's logits (the raw bars here, in the browser; the
// processed ones by the server from its cached logits: no model call), and a branch from any
// alternative or from typed text.
"use strict";

import {
  $, el, fmtT, pct, postJSON, roundT, setStatus, sliderToT, softmaxStats, tToSlider, visible,
} from "./util.js";
import { samplerFields } from "./samplers.js";
import { branch, branchFrom } from "./lab.js";
import { bucketOf } from "./tokens.js";

const TOP = 15;  // rows in the step's table
let step = { open: false };
let opened = 0;  // answers can arrive after another step was opened: only the latest counts

export function isOpen() { return step.open; }

function stepBody(t, withLogits) {
  const b = step.b;
  return { prompt: b.prompt, chat: b.chat, tokens: b.tokens.slice(0, step.index).map((x) => x.token_id),
    temperatures: [t], top: TOP, return_logits: withLogits, ...samplerFields() };
}

export async function openStep(branchId, index, origin) {
  const b = branch(branchId);
  const tok = b.tokens[index];
  const mine = ++opened;
  step = { open: true, b, index, origin, tok, T: b.temperature, logits: null, list: [],
    proc: null, procT: null, procSummary: null, samplersOn: false, timer: 0, requests: 0 };
  $("step-title").textContent = `Step ${index + 1} of ${b.label}`;
  $("step-where").textContent = tok.typed ? `chosen by hand: ${visible(tok.text)}`
    : `chosen ${visible(tok.text)} · raw ${pct(tok.raw_prob)} · processed ${pct(tok.prob)}` +
      ` at T = ${roundT(b.temperature)}`;
  $("step-t").value = tToSlider(step.T);
  $("step-t-out").textContent = fmtT(step.T);
  $("step-text").value = "";
  const chart = $("step-chart");
  chart.textContent = "reading the step…";
  delete chart.dataset.cached;
  $("step").hidden = false;
  $("step-title").focus();
  try {
    const data = await postJSON("/v1/lab/step", stepBody(step.T, true));
    if (mine !== opened || !step.open) return;
    step.logits = Float64Array.from(data.logits);
    step.list = data.tokens.slice();
    step.samplersOn = data.samplers_on;
    keepProcessed(data, step.T);
    if (!tok.typed && !step.list.some((x) => x.token_id === tok.token_id)) {
      step.list.push({ token_id: tok.token_id, text: tok.text, logit: step.logits[tok.token_id] });
    }
    drawStep();
    const chosen = chart.querySelector(".row.chosen .alt") || chart.querySelector(".alt");
    if (chosen) chosen.focus();
  } catch (err) {
    if (mine === opened) chart.textContent = "error: " + err.message;
  }
}

function keepProcessed(data, t) {
  const row = data.temperatures[0];
  step.proc = row.probs;
  step.procT = t;
  step.procSummary = row.processed;
  step.requests++;
  $("step-chart").dataset.cached = String(data.cached);
}

export function closeStep(restoreFocus = true) {
  if (!step.open) return;
  step.open = false;
  clearTimeout(step.timer);
  $("step").hidden = true;
  if (restoreFocus && step.origin && step.origin.isConnected) step.origin.focus();
}

function rankOf(id) {  // 1-based rank by logit: the raw order at every T > 0
  const x = step.logits[id];
  let ahead = 0;
  for (let i = 0; i < step.logits.length; i++) if (step.logits[i] > x) ahead++;
  return ahead + 1;
}

function bar(kind, p) {
  const b = el("span", "bar " + kind);
  b.style.width = (100 * p).toFixed(3) + "%";
  b.dataset.p = p.toFixed(6);
  return b;
}

function drawStep() {
  if (!step.logits) return;
  const t = step.T;
  const st = softmaxStats(step.logits, t);
  const proc = step.samplersOn && step.procT === t ? step.proc : null;
  let stats = `raw at T = ${roundT(t)}: entropy ${st.entropy.toFixed(3)} nats, effective vocabulary ${
    st.eff < 100 ? st.eff.toFixed(2) : Math.round(st.eff)}`;
  if (step.samplersOn) {
    stats += proc ? ` · after samplers: ${step.procSummary.kept} kept, entropy ${step.procSummary.entropy.toFixed(3)}`
      : " · after samplers: updating…";
  }
  $("step-stats").textContent = stats;
  $("step-legend-proc").hidden = !step.samplersOn;
  $("step-legend").classList.toggle("single", !step.samplersOn);
  const chart = $("step-chart");
  chart.textContent = "";
  chart.dataset.t = String(roundT(t));
  chart.classList.toggle("stale", step.samplersOn && !proc);
  step.list.forEach((tok, i) => {
    const p = st.prob(tok.token_id);
    const q = step.samplersOn ? (proc && i < proc.length ? proc[i] : null) : p;
    const row = el("div", "row" + (tok.token_id === step.tok.token_id ? " chosen" : ""));
    row.setAttribute("role", "listitem");
    const pick = el("button", "alt tok", visible(tok.text));
    pick.type = "button";
    pick.dataset.tokenId = tok.token_id;
    pick.setAttribute("aria-label", `continue with ${visible(tok.text)}: raw ${pct(p)}` +
      (q === null ? "" : `, after samplers ${pct(q)}`));
    pick.addEventListener("click", () => choose(i));
    const bars = el("span", "bars");
    bars.appendChild(bar("raw", p));
    if (step.samplersOn && q !== null) bars.appendChild(bar("proc", q));
    const val = el("span", "val", pct(p) + (step.samplersOn ? " → " + (q === null ? "?" : pct(q)) : ""));
    row.append(pick, bars, val);
    chart.appendChild(row);
  });
}

function onSlider() {
  step.T = sliderToT(+$("step-t").value);
  $("step-t-out").textContent = fmtT(step.T);
  drawStep();  // instant: the browser's softmax over the step's logits
  if (!step.samplersOn || !step.logits) return;
  clearTimeout(step.timer);
  step.timer = setTimeout(async () => {
    const t = step.T, mine = opened;
    try {
      const data = await postJSON("/v1/lab/step", stepBody(t, false));
      if (mine !== opened || !step.open || t !== step.T) return;
      keepProcessed(data, t);
      drawStep();
    } catch (err) {
      setStatus("error: " + err.message, true);
    }
  }, 150);
}

// Continue with row i of the table, at the temperature the step is drawn at.
function choose(i) {
  const tok = step.list[i];
  const t = step.T;
  const one = softmaxStats(step.logits, 1);
  const at = softmaxStats(step.logits, t);
  const proc = step.samplersOn && step.procT === t ? step.proc : null;
  // Before the processed answer for this T arrives, the raw odds at T stand in.
  const q = proc && i < proc.length ? proc[i] : at.prob(tok.token_id);
  const rank = rankOf(tok.token_id);
  const pick = {
    token_id: tok.token_id, text: tok.text, display: visible(tok.text), raw_prob: one.prob(tok.token_id),
    prob: q, raw_entropy: one.entropy, entropy: proc ? step.procSummary.entropy : at.entropy,
    rank, bucket: bucketOf(rank), finished: null, picked: true,
    top: step.list.slice(0, 10).map((x, j) => ({ token_id: x.token_id, text: x.text,
      raw_prob: one.prob(x.token_id), prob: proc && j < proc.length ? proc[j] : at.prob(x.token_id) })),
  };
  const { b, index } = step;
  closeStep(false);
  branchFrom(b.id, index, t, pick);
}

function typed() {
  const text = $("step-text").value;
  if (!text) { $("step-text").focus(); return; }
  const { b, index, T } = step;
  closeStep(false);
  branchFrom(b.id, index, T, null, text);
}

export function initStep() {
  $("step-t").addEventListener("input", onSlider);
  $("step-close").addEventListener("click", () => closeStep());
  $("step-go").addEventListener("click", typed);
  $("step-text").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); typed(); } });
}
