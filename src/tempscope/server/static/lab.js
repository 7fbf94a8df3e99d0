// The temperature lab's texts: side-by-side generation (one column per temperature, one batched
// request), single generation, and branches. Every text is a branch: a root (a column or a
// Generate) or a child that shares its parent's first `at` tokens and then took another token.
// The server does the work (POST /v1/lab/continue); this file only keeps the tree and draws it.
"use strict";

import {
  $, el, fmtT, getJSON, num, parseTemps, postStream, roundT, setStatus, visible,
} from "./util.js";
import { markInvalid, samplerFields } from "./samplers.js";
import { appendStrip, drawStrip, hideTip, shown, tokenSpan } from "./tokens.js";

const branches = new Map();  // id -> branch
let nextId = 1;
let current = null;          // the branch shown under "Current branch"
let compared = [];           // up to two branch ids
let abort = null;
let eos = new Set();
let afterRun = () => {};

export function setEos(ids) { eos = new Set(ids); }
export function onRun(cb) { afterRun = cb; }
export function branch(id) { return branches.get(+id); }
export function stop() { if (abort) abort.abort(); }
export function busy() { return abort !== null; }

function newBranch(fields) {
  const b = { id: nextId++, parent: null, at: 0, tokens: [], state: "streaming", finish: null,
    summary: null, views: [], ...fields };
  branches.set(b.id, b);
  return b;
}

function seedNow() {
  const s = num("seed", (x) => parseInt(x, 10));
  return s !== null ? s : Math.floor(Math.random() * 2 ** 31);
}

// ---- one streamed request, its rows feeding branches ------------------------------------------
async function run(rows, body, what) {
  if (abort) abort.abort();
  abort = new AbortController();
  const mine = abort;
  for (const id of ["generate", "side"]) $(id).disabled = true;
  $("stop").disabled = false;
  setStatus(what + "…");
  let count = 0;
  try {
    await postStream("/v1/lab/continue", body, mine.signal, (ev) => {
      if (ev.type === "start") {
        for (const b of rows) {
          for (const p of ev.appended) addToken(b, { ...p, typed: true });
          b.seed = ev.seed;
        }
      } else if (ev.type === "token") {
        count++;
        addToken(rows[ev.column], ev.token);
      } else if (ev.type === "done") {
        ev.columns.forEach((c, i) => finish(rows[i], c));
      }
    });
    const reasons = [...new Set(rows.map((b) => b.finish))].join(", ");
    setStatus(`${count} tokens, finish_reason: ${reasons}`);
  } catch (err) {
    for (const b of rows) if (b.state === "streaming") finish(b, null);
    if (err.name === "AbortError") setStatus(`stopped after ${count} tokens`);
    else { setStatus("error: " + err.message, true); markInvalid(err.param); }
  } finally {
    if (abort === mine) {
      abort = null;
      for (const id of ["generate", "side"]) $(id).disabled = false;
      $("stop").disabled = true;
    }
  }
}

function requestBody(b, temperatures, extra) {
  return {
    prompt: b.prompt, chat: b.chat, tokens: b.tokens.map((t) => t.token_id), temperatures,
    max_tokens: num("max-tokens", (x) => parseInt(x, 10)) || 40, seed: b.seed, stream: true,
    top_alternatives: 10, ...samplerFields(), ...extra,
  };
}

function addToken(b, tok) {
  b.tokens.push(tok);
  const i = b.tokens.length - 1;
  for (const v of b.views) {
    v.text.appendChild(tokenSpan(tok, b.id, i));
    if (v.strip) appendStrip(v.strip, tok, i);
  }
}

function finish(b, column) {
  b.state = "done";
  if (column) { b.summary = column; b.finish = column.finish_reason; }
  else b.finish = b.finish || "stopped";
  for (const v of b.views) {
    v.root.dataset.state = "done";
    if (v.stats) drawStats(v.stats, b);
  }
  drawBranches();
}

function drawStats(dl, b) {
  dl.textContent = "";
  const s = b.summary || {};
  const fmt = (x, unit) => (x === null || x === undefined ? "–" : x.toFixed(2) + unit);
  for (const [key, label, value] of [
    ["mean_logprob", "mean log-prob", fmt(s.mean_logprob, "")],
    ["mean_entropy", "mean entropy", fmt(s.mean_entropy, " nats")],
    ["mean_sampled_entropy", "sampled from", fmt(s.mean_sampled_entropy, " nats")],
    ["finish_reason", "finish", b.finish || "…"],
  ]) {
    const d = el("div");
    d.dataset.stat = key;
    d.append(el("dt", "", label), el("dd", "", value));
    dl.appendChild(d);
  }
}

// ---- Generate and Side by side ----------------------------------------------------------------
export function generate(t) {
  const b = newBranch({ label: `Generate · T = ${roundT(t)}`, temperature: t,
    prompt: $("prompt").value, chat: $("chat").checked, seed: seedNow() });
  show(b.id);
  drawBranches();
  afterRun({ view: "gen", seed: b.seed });
  return run([b], requestBody(b, [t]), "generating");
}

export function sideBySide() {
  const temps = parseTemps($("lab-temps").value, 16);
  if (!temps.length) { setStatus("give at least one temperature for the columns", true); return null; }
  const seed = seedNow();
  const prompt = $("prompt").value, chat = $("chat").checked;
  const box = $("columns");
  box.textContent = "";
  const rows = temps.map((t) => {
    const b = newBranch({ label: `T = ${t}`, temperature: t, prompt, chat, seed, column: true });
    const col = el("article", "column");
    col.dataset.temperature = String(t);
    col.dataset.state = "streaming";
    col.dataset.branch = b.id;
    col.setAttribute("aria-label", `generation at T = ${fmtT(t)}`);
    const text = el("div", "col-text");
    if (!chat) text.appendChild(el("span", "prompt", prompt));
    const strip = el("div", "strip");
    strip.setAttribute("aria-label", "entropy of each step");
    const stats = el("dl", "col-stats");
    col.append(el("h4", "", `T = ${fmtT(t)}`), text, strip, stats);
    box.appendChild(col);
    b.views.push({ root: col, text, strip, stats });
    drawStats(stats, b);
    return b;
  });
  if (current === null) show(rows[0].id);
  drawBranches();
  afterRun({ view: "side", seed });
  return run(rows, requestBody(rows[0], temps), `side by side at ${temps.join(", ")}`);
}

// Continue a branch from step `index`: with `pick` (a token object) or with typed text.
export function branchFrom(parentId, index, t, pick, typed) {
  const parent = branch(parentId);
  const tokens = parent.tokens.slice(0, index);
  if (pick) tokens.push(pick);
  const what = pick ? visible(pick.text) : `“${typed}”`;
  const b = newBranch({ parent: parent.id, at: index, tokens, temperature: t,
    label: `${parent.label} › ${index + 1}: ${what}`, prompt: parent.prompt, chat: parent.chat,
    seed: parent.seed });
  show(b.id);
  drawBranches();
  $("output").scrollIntoView({ block: "nearest" });
  if (pick && eos.has(pick.token_id)) { b.finish = "eos"; finish(b, null); return null; }
  return run([b], requestBody(b, [t], typed ? { append_text: typed } : {}),
    `continuing from step ${index + 1} at T = ${roundT(t)}`);
}

// Entropy strips again (raw and processed entropies differ).
export function redrawStrips() {
  for (const b of branches.values()) for (const v of b.views) if (v.strip) drawStrip(v.strip, b.tokens);
}

// ---- the current branch, where it sits, and the list of branches ------------------------------
function ancestry(b) {
  const line = [];
  for (let x = b; x; x = x.parent !== null ? branch(x.parent) : null) line.unshift(x);
  return line;
}

export function show(id) {
  const b = branch(id);
  for (const x of branches.values()) x.views = x.views.filter((v) => v.root !== $("output"));
  current = b.id;
  hideTip();
  const out = $("output");
  out.textContent = "";
  out.dataset.branch = b.id;
  out.dataset.state = b.state;
  if (!b.chat) out.appendChild(el("span", "prompt", b.prompt));
  b.tokens.forEach((tok, i) => {
    const span = tokenSpan(tok, b.id, i);
    if (b.parent !== null && i === b.at) span.classList.add("fork");
    out.appendChild(span);
  });
  b.views.push({ root: out, text: out });
  const where = $("where");
  where.textContent = "";
  ancestry(b).forEach((x, i, all) => {
    if (i) where.append(" › ");
    const go = el("button", "crumb", x.parent === null ? x.label : `step ${x.at + 1}: ${
      x.tokens[x.at] ? visible(x.tokens[x.at].text) : "typed"}`);
    go.type = "button";
    if (i === all.length - 1) go.setAttribute("aria-current", "true");
    go.addEventListener("click", () => { show(x.id); drawBranches(); });
    where.appendChild(go);
  });
}

function preview(b) {
  const text = b.tokens.map(shown).join("").replace(/\s+/g, " ");
  return text.length > 48 ? text.slice(0, 48) + "…" : text;
}

export function drawBranches() {
  const list = $("branches");
  list.textContent = "";
  const kids = new Map();
  for (const b of branches.values()) {
    const key = b.parent === null ? 0 : b.parent;
    if (!kids.has(key)) kids.set(key, []);
    kids.get(key).push(b);
  }
  const add = (ul, b) => {
    const li = el("li");
    li.dataset.branch = b.id;
    const go = el("button", "go", b.label);
    go.type = "button";
    if (b.id === current) go.setAttribute("aria-current", "true");
    go.addEventListener("click", () => { show(b.id); drawBranches(); });
    const cmp = el("label", "inline cmp");
    const box = el("input");
    box.type = "checkbox";
    box.checked = compared.includes(b.id);
    box.setAttribute("aria-label", `compare ${b.label}`);
    box.addEventListener("change", () => toggleCompare(b.id, box.checked));
    cmp.append(box, " compare");
    li.append(go, el("span", "preview", `${preview(b)} · ${b.state === "done" ? b.finish : "…"}`), cmp);
    const children = kids.get(b.id) || [];
    if (children.length) {
      const sub = el("ul");
      children.forEach((c) => add(sub, c));
      li.appendChild(sub);
    }
    ul.appendChild(li);
  };
  (kids.get(0) || []).forEach((b) => add(list, b));
  drawCompare();
}

function toggleCompare(id, on) {
  compared = compared.filter((x) => x !== id);
  if (on) compared.push(id);
  if (compared.length > 2) compared = compared.slice(-2);
  drawBranches();
}

function drawCompare() {
  const box = $("branch-compare");
  box.textContent = "";
  const [a, b] = compared.map(branch);
  if (!a || !b) return;
  let same = 0;
  while (same < a.tokens.length && same < b.tokens.length &&
         a.tokens[same].token_id === b.tokens[same].token_id) same++;
  box.appendChild(el("p", "help", `${same} tokens in common, then they part`));
  for (const x of [a, b]) {
    const pane = el("div", "pane");
    pane.dataset.branch = x.id;
    const text = el("div", "col-text");
    x.tokens.forEach((tok, i) => {
      const span = tokenSpan(tok, x.id, i);
      span.classList.add(i < same ? "same" : i === same ? "fork" : "own");
      text.appendChild(span);
    });
    const strip = el("div", "strip");
    drawStrip(strip, x.tokens);
    const stats = el("dl", "col-stats");
    drawStats(stats, x);
    pane.append(el("h4", "", x.label), text, strip, stats);
    box.appendChild(pane);
  }
}

// ---- the model's T* on the default text (GET /v1/lab/calibration, computed once per server) ---
export function initCalibration(useT) {
  let tStar = null;
  $("tstar-box").addEventListener("toggle", async () => {
    if (!$("tstar-box").open || tStar !== null) return;
    $("tstar-out").textContent = "scoring a few passages of human text…";
    try {
      const c = await getJSON("/v1/lab/calibration");
      tStar = roundT(c.t_star);
      const edge = c.at_edge ? ` (at the edge of the range searched: T* is ${c.at_edge} it)` : "";
      $("tstar-out").textContent = `T* = ${fmtT(c.t_star)}${edge}: ${c.direction}. ` +
        `NLL ${c.nll_t1.toFixed(3)} nats/token at T = 1, ${c.nll_t_star.toFixed(3)} at T*; ` +
        `ECE ${c.ece_t1.toFixed(3)} → ${c.ece_t_star.toFixed(3)} (${c.positions} tokens of ` +
        `${c.texts} passages).`;
      $("tstar-use").hidden = false;
    } catch (err) {
      $("tstar-out").textContent = "could not compute T*: " + err.message;
    }
  });
  $("tstar-use").addEventListener("click", () => { if (tStar !== null) useT(tStar); });
}

