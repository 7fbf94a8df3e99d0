// Generated tokens as spans: their colour (probability, GLTR rank bucket or entropy), the legend,
// the per-token entropy strip and the tooltip with the top alternatives.
"use strict";

import { $, el, pct, visible } from "./util.js";

const tokOf = new WeakMap();  // span -> the token object the server sent
let maxEntropy = Math.log(50000);  // ln V: the entropy scale's top (set from /v1/info)

// GLTR's buckets and colours (Gehrmann et al., 2019). The server buckets what it generates
// (tempscope.lab.GLTR_EDGES); the page buckets only a token picked by hand in a step.
const BUCKETS = [
  ["top10", 10, "top 10", "#9ee09e"], ["top100", 100, "top 100", "#f7e37c"],
  ["top1000", 1000, "top 1000", "#f6a39b"], ["rest", Infinity, "rest", "#cfaaf5"],
];
const BUCKET_COLOUR = Object.fromEntries(BUCKETS.map(([k, , , c]) => [k, c]));
// The engine counts every rank over the whole vocabulary; a token without one (null) is grey.
const UNCOUNTED = "#dfe3e8";
export function bucketOf(rank) { return BUCKETS.find(([, edge]) => rank <= edge)[0]; }

export function setVocab(v) { if (v > 1) maxEntropy = Math.log(v); }
export function colourMode() { return $("colour-mode").value; }
function raw() { return $("mode").value === "raw"; }
export function probOf(tok) { return raw() ? tok.raw_prob : tok.prob; }
export function entropyOf(tok) { return raw() ? tok.raw_entropy : tok.entropy; }

// The text a token shows: itself, or its bytes when it holds part of a UTF-8 character.
export function shown(tok) {
  return tok.text.includes("\ufffd") && tok.display ? tok.display : tok.text;
}

function rankText(tok) {
  return tok.rank !== null ? "rank " + tok.rank : "rank unknown";
}

// One hue, lightness by value: dark = high, pale = low (readable in colour-blindness too).
function ramp(hue, x) {
  const v = Math.max(0, Math.min(1, x));
  return [`hsl(${hue}, 80%, ${92 - 52 * Math.sqrt(v)}%)`, v > 0.55];
}

function paint(span, tok) {
  span.dataset.p = tok.typed ? "" : probOf(tok).toFixed(6);
  if (tok.typed) { span.style.background = ""; span.style.color = ""; return; }
  let bg, dark = false;
  const mode = colourMode();
  if (mode === "rank") bg = BUCKET_COLOUR[tok.bucket] || UNCOUNTED;
  else if (mode === "entropy") [bg, dark] = ramp(28, entropyOf(tok) / maxEntropy);
  else [bg, dark] = ramp(210, probOf(tok));
  span.style.background = bg;
  span.style.color = dark ? "#fff" : "#111";
}

// A focusable, clickable span for token `index` of branch `branch`.
export function tokenSpan(tok, branch, index) {
  const span = el("span", "t" + (tok.typed ? " typed" : "") + (tok.finished === "eos" ? " eos" : ""),
    shown(tok));
  span.tabIndex = 0;
  span.setAttribute("role", "button");
  span.dataset.branch = branch;
  span.dataset.index = index;
  span.dataset.tokenId = tok.token_id;
  if (!tok.typed) {
    span.dataset.rank = tok.rank === null ? "" : tok.rank;
    span.dataset.bucket = tok.bucket || "uncounted";
    span.dataset.entropy = entropyOf(tok).toFixed(4);
    span.setAttribute("aria-label", `${visible(tok.text)}, ${pct(probOf(tok))}, ` +
      `${rankText(tok)}; Enter opens this step`);
  } else {
    span.setAttribute("aria-label", `${visible(tok.text)} (chosen by hand); Enter opens this step`);
  }
  tokOf.set(span, tok);
  paint(span, tok);
  return span;
}

export function tokenOf(span) { return tokOf.get(span); }

// The entropy of each step as a bar under the text: tall = the model was unsure.
export function drawStrip(strip, tokens) {
  strip.textContent = "";
  tokens.forEach((tok, i) => appendStrip(strip, tok, i));
}
export function appendStrip(strip, tok, i) {
  const bar = el("span", "e");
  if (tok.typed) bar.classList.add("typed");
  else {
    const h = entropyOf(tok);
    bar.style.height = Math.max(4, 100 * Math.min(1, h / maxEntropy)) + "%";
    bar.title = `step ${i + 1}: ${h.toFixed(2)} nats`;
  }
  strip.appendChild(bar);
}

// Colour every token again (the colour mode or the raw/processed choice changed).
export function repaint() {
  for (const span of document.querySelectorAll(".t[data-branch]")) {
    const tok = tokOf.get(span);
    if (!tok) continue;
    paint(span, tok);
    if (!tok.typed) span.dataset.entropy = entropyOf(tok).toFixed(4);
  }
  drawLegend();
}

export function drawLegend() {
  const box = $("colour-legend");
  box.textContent = "";
  const mode = colourMode();
  const basis = raw() ? "raw, T = 1" : "processed";
  const swatch = (bg, text, dark) => {
    const s = el("span", "swatch", text);
    s.style.background = bg;
    if (dark) s.style.color = "#fff";
    return s;
  };
  if (mode === "rank") {
    box.append("rank of the chosen token in the model's distribution: ");
    for (const [, , label, colour] of BUCKETS) box.append(swatch(colour, label), " ");
  } else if (mode === "entropy") {
    box.append(`entropy of each step (${basis}): `);
    for (const x of [0, 0.25, 0.5, 0.75, 1]) {
      const [bg, dark] = ramp(28, x);
      box.append(swatch(bg, (x * maxEntropy).toFixed(1), dark), " ");
    }
    box.append(`nats (max ln V = ${maxEntropy.toFixed(2)})`);
  } else {
    box.append(`probability of the chosen token (${basis}): `);
    for (const x of [0.01, 0.1, 0.3, 0.6, 1]) {
      const [bg, dark] = ramp(210, x);
      box.append(swatch(bg, pct(x), dark), " ");
    }
  }
}

// ---- the tooltip: the top alternatives, raw and processed -------------------------------------
export function showTip(ev) {
  const span = ev.target.closest && ev.target.closest(".t");
  const tok = span && tokOf.get(span);
  if (!tok || tok.typed) return;
  const tip = $("tooltip");
  tip.textContent = "";
  tip.appendChild(el("div", "tip-head",
    `chosen ${visible(tok.text)} · raw ${pct(tok.raw_prob)} · processed ${pct(tok.prob)}`));
  tip.appendChild(el("div", "tip-head",
    `${rankText(tok)} · entropy ${tok.raw_entropy.toFixed(2)} raw, ${tok.entropy.toFixed(2)} processed`));
  const cols = el("div", "tip-cols");
  cols.append(el("span", "", "alternative"), el("span", "", "raw"), el("span", "", "processed"));
  tip.appendChild(cols);
  const addRow = (a) => {
    const row = el("div", "tip-row" + (a.token_id === tok.token_id ? " chosen" : ""));
    row.append(el("span", "", visible(a.text)), el("span", "", pct(a.raw_prob)), el("span", "", pct(a.prob)));
    tip.appendChild(row);
  };
  tok.top.slice(0, 5).forEach(addRow);
  if (tok.named && tok.named.length) {  // logprob_token_ids: the tokens asked for, any rank
    tip.appendChild(el("div", "tip-head", "tokens you named (logprob_token_ids)"));
    tok.named.forEach(addRow);
  }
  tip.hidden = false;
  const r = span.getBoundingClientRect();
  const host = tip.offsetParent.getBoundingClientRect();  // .results, position: relative
  const left = Math.min(r.left - host.left, host.width - tip.offsetWidth - 4);
  tip.style.left = Math.max(4, left) + "px";
  // Below the token, or above it when the window has no room left underneath.
  const below = r.bottom + 4 + tip.offsetHeight <= window.innerHeight;
  tip.style.top = (below ? r.bottom - host.top + 4 : r.top - host.top - tip.offsetHeight - 4) + "px";
  span.setAttribute("aria-describedby", "tooltip");
}
export function hideTip() { $("tooltip").hidden = true; }
