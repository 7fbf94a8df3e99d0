// Small helpers every part of the playground uses: DOM lookup, number formats, the log scale of
// the temperature sliders, the softmax the sliders redraw with, and the HTTP calls.
"use strict";

export const $ = (id) => document.getElementById(id);

// ---- temperature scale: slider position 0 = greedy, 1..1000 = 0.1 .. 100 (log) -------------
export const SLIDER_MAX = 1000;
const T_MIN = 0.1, T_MAX = 100;

export function sliderToT(pos) {
  if (pos <= 0) return 0;
  return T_MIN * Math.pow(T_MAX / T_MIN, (pos - 1) / (SLIDER_MAX - 1));
}
export function tToSlider(t) {
  if (!(t > 0)) return 0;
  const clamped = Math.min(Math.max(t, T_MIN), T_MAX);
  return Math.round(1 + (SLIDER_MAX - 1) * Math.log(clamped / T_MIN) / Math.log(T_MAX / T_MIN));
}
export function fmtT(t) {
  if (t === 0) return "0 (greedy)";
  return t >= 10 ? t.toFixed(1) : t >= 1 ? t.toFixed(2) : t.toFixed(3);
}
// A slider value as a short number (for requests and links): 3 significant digits.
export function roundT(t) { return t === 0 ? 0 : +t.toPrecision(3); }

// ---- math: softmax(logits / T) with entropy, over the whole vocabulary -----------------------
export function softmaxStats(logits, t) {
  const n = logits.length;
  let max = -Infinity, arg = 0;
  for (let i = 0; i < n; i++) if (logits[i] > max) { max = logits[i]; arg = i; }
  if (t === 0) return { prob: (i) => (i === arg ? 1 : 0), entropy: 0, eff: 1, argmax: arg };
  // Shift by the max, then scale: every exponent is <= 0, so nothing overflows at any T.
  let z = 0, s = 0;
  for (let i = 0; i < n; i++) {
    const x = (logits[i] - max) / t;
    const e = Math.exp(x);
    z += e; s += e * x;
  }
  const logZ = Math.log(z);
  const entropy = Math.max(0, logZ - s / z);  // H = log Z - E[x]
  return { prob: (i) => Math.exp((logits[i] - max) / t - logZ), entropy, eff: Math.exp(entropy), argmax: arg };
}

// ---- formats ---------------------------------------------------------------------------------
export function visible(text) {
  if (text === "") return "∅";
  return text.replace(/ /g, "␣").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}
export function pct(p) {
  if (p === 0) return "0%";
  if (p < 0.0001) return p.toExponential(1);
  return (100 * p).toFixed(p < 0.01 ? 2 : 1) + "%";
}
export function num(id, parse) {
  const raw = $(id).value.trim();
  if (raw === "") return null;
  const v = parse(raw);
  return Number.isFinite(v) ? v : null;
}
export function parseTemps(text, max = 8) {
  return text.split(/[ ,;]+/).map(parseFloat).filter((t) => Number.isFinite(t) && t >= 0).slice(0, max);
}
export function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}
export function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- HTTP ------------------------------------------------------------------------------------
export function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}
async function failure(res) {
  const data = await res.json().catch(() => ({}));
  const err = new Error((data.error && data.error.message) || res.status + " " + res.statusText);
  err.param = data.error && data.error.param;
  return err;
}
export async function postJSON(path, body, signal) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw await failure(res);
  return res.json();
}
export async function getJSON(path) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) throw await failure(res);
  return res.json();
}
// POST a streaming request and call onEvent with every server-sent JSON object, in order.
export async function postStream(path, body, signal, onEvent) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, cut).trim();
      buf = buf.slice(cut + 2);
      if (!line.startsWith("data:")) continue;
      const payload = line.slice(5).trim();
      if (payload === "[DONE]") continue;
      const msg = JSON.parse(payload);
      if (msg.error) throw new Error(msg.error.message);
      onEvent(msg);
    }
  }
}
