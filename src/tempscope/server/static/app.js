// tempscope playground: draws the server's next-token logits at any temperature.
// The softmax for the slider runs here, on the logits /v1/distribution returned, so moving the
// slider needs no request; anything that depends on the sampler chain comes from the server.
"use strict";

const $ = (id) => document.getElementById(id);
const SLIDER_MAX = 1000;
const T_MIN = 0.1, T_MAX = 100;
const ORDER_DEFAULT = ["temperature", "top_k", "top_p", "min_p"];

const state = {
  logits: null,      // Float64Array (V,) last-position logits
  tokens: [],        // [{token_id, text, logit}] top-N by logit: the order at every T
  promptKey: "",     // prompt + chat flag the logits belong to
  processed: null,   // {temperatures: [...]} from the server, or null when samplers are off
  processedFor: "",  // request key the processed answer belongs to
  order: ORDER_DEFAULT.slice(),
  abort: null,
  timer: 0,
  loads: 0,          // distribution requests sent
};

// ---- temperature scale: slider position 0 = greedy, 1..1000 = 0.1 .. 100 (log) -------------
function sliderToT(pos) {
  if (pos <= 0) return 0;
  return T_MIN * Math.pow(T_MAX / T_MIN, (pos - 1) / (SLIDER_MAX - 1));
}
function tToSlider(t) {
  if (!(t > 0)) return 0;
  const clamped = Math.min(Math.max(t, T_MIN), T_MAX);
  return Math.round(1 + (SLIDER_MAX - 1) * Math.log(clamped / T_MIN) / Math.log(T_MAX / T_MIN));
}
function fmtT(t) {
  if (t === 0) return "0 (greedy)";
  return t >= 10 ? t.toFixed(1) : t >= 1 ? t.toFixed(2) : t.toFixed(3);
}
function currentT() {
  const v = parseFloat($("temp-value").value);
  return Number.isFinite(v) && v >= 0 ? v : sliderToT(+$("temp-slider").value);
}

// ---- math: softmax(logits / T) with entropy, over the whole vocabulary -----------------------
function softmaxStats(logits, t) {
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

// ---- helpers ---------------------------------------------------------------------------------
function visible(text) {
  if (text === "") return "∅";
  return text.replace(/ /g, "␣").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}
function pct(p) {
  if (p === 0) return "0%";
  if (p < 0.0001) return p.toExponential(1);
  return (100 * p).toFixed(p < 0.01 ? 2 : 1) + "%";
}
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}
function num(id, parse) {
  const raw = $(id).value.trim();
  if (raw === "") return null;
  const v = parse(raw);
  return Number.isFinite(v) ? v : null;
}
function samplerFields() {
  const f = {};
  const k = num("top-k", (x) => parseInt(x, 10));
  const p = num("top-p", parseFloat);
  const m = num("min-p", parseFloat);
  if (k !== null) f.top_k = k;
  if (p !== null) f.top_p = p;
  if (m !== null) f.min_p = m;
  if (Object.keys(f).length) f.sampler_order = state.order.slice();
  return f;
}
function compareTemps() {
  return $("compare").value.split(/[ ,;]+/).map(parseFloat)
    .filter((t) => Number.isFinite(t) && t >= 0).slice(0, 8);
}
function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}
async function postJSON(path, body, signal) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || res.status + " " + res.statusText);
  return data;
}

// ---- sampler order: a list with move-up / move-down buttons (keyboard friendly) --------------
function drawOrder() {
  const ol = $("order");
  ol.textContent = "";
  state.order.forEach((name, i) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = name;
    li.appendChild(label);
    for (const [dir, sym, word] of [[-1, "↑", "up"], [1, "↓", "down"]]) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = sym; b.className = "mini";
      b.setAttribute("aria-label", `move ${name} ${word}`);
      b.disabled = (i + dir < 0) || (i + dir >= state.order.length);
      b.addEventListener("click", () => {
        const j = i + dir;
        [state.order[i], state.order[j]] = [state.order[j], state.order[i]];
        drawOrder();
        const again = ol.children[j] && ol.children[j].querySelectorAll("button")[dir < 0 ? 0 : 1];
        if (again && !again.disabled) again.focus();
        scheduleProcessed();
      });
      li.appendChild(b);
    }
    ol.appendChild(li);
  });
}

// ---- drawing ---------------------------------------------------------------------------------
function processedAt(t) {
  if (!state.processed) return null;
  return state.processed.temperatures.find((r) => Math.abs(r.temperature - t) < 1e-9) || null;
}

function drawChart() {
  if (!state.logits) return;
  const t = currentT();
  const st = softmaxStats(state.logits, t);
  const proc = processedAt(t);
  const samplersOn = Object.keys(samplerFields()).length > 0;
  const n = Math.min(+$("top-n").value || 12, state.tokens.length);
  $("chart-title").textContent = "T = " + fmtT(t);
  $("stat-entropy").textContent = st.entropy.toFixed(3) + " nats";
  $("stat-eff").textContent = st.eff < 100 ? st.eff.toFixed(2) : Math.round(st.eff).toLocaleString();
  const top = state.tokens[0];
  $("stat-top").textContent = top ? `${visible(top.text)} ${pct(st.prob(top.token_id))}` : "–";
  $("stat-proc-wrap").hidden = !samplersOn;
  $("legend-proc").hidden = !samplersOn;
  $("legend").classList.toggle("single", !samplersOn);
  if (samplersOn) {
    $("stat-proc").textContent = proc
      ? `${proc.processed.kept.toLocaleString()} tokens kept, entropy ${proc.processed.entropy.toFixed(3)}, eff. vocab ${proc.processed.effective_vocab.toFixed(2)}`
      : "updating…";
  }
  const chart = $("chart");
  chart.textContent = "";
  chart.classList.toggle("stale", samplersOn && !proc);
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
    if (samplersOn && proc) {
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
  const temps = compareTemps();
  const table = $("compare-table");
  table.textContent = "";
  if (!temps.length || !state.logits) return;
  const stats = temps.map((t) => softmaxStats(state.logits, t));
  const head = table.createTHead().insertRow();
  const th0 = document.createElement("th"); th0.textContent = "token"; th0.scope = "col";
  head.appendChild(th0);
  temps.forEach((t, j) => {
    const th = document.createElement("th"); th.scope = "col";
    th.innerHTML = `T = ${fmtT(t)}<br><small>H ${stats[j].entropy.toFixed(2)} · eff ${stats[j].eff < 100 ? stats[j].eff.toFixed(1) : Math.round(stats[j].eff)}</small>`;
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
  const fields = samplerFields();
  if (!state.logits || !Object.keys(fields).length) { state.processed = null; drawChart(); return; }
  const temps = [currentT(), ...compareTemps()];
  const body = { prompt: $("prompt").value, chat: $("chat").checked, temperatures: temps, top: 50, ...fields };
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

// ---- generation: stream tokens, colour each by its probability -------------------------------
function colour(p) {
  // One hue, lightness by probability: dark = likely, pale = unlikely (readable in colour-blindness).
  const l = 92 - 52 * Math.sqrt(Math.max(0, Math.min(1, p)));
  return `hsl(210, 80%, ${l}%)`;
}

function addToken(out, text, info) {
  const span = document.createElement("span");
  span.className = "t"; span.tabIndex = 0; span.textContent = text;
  if (info) {
    span.style.background = colour(info.p);
    span.style.color = info.p > 0.55 ? "#fff" : "#111";
    span.dataset.p = info.p.toFixed(6);
    span.dataset.alts = JSON.stringify(info.alts);
    span.dataset.token = info.token;
    span.setAttribute("aria-label", `${text} (${pct(info.p)})`);
  }
  out.appendChild(span);
}

function showTip(ev) {
  const span = ev.target.closest(".t");
  if (!span || !span.dataset.alts) return;
  const tip = $("tooltip");
  const alts = JSON.parse(span.dataset.alts);
  tip.textContent = "";
  const h = document.createElement("div");
  h.className = "tip-head";
  h.textContent = `chosen ${visible(span.dataset.token)} · ${pct(+span.dataset.p)}`;
  tip.appendChild(h);
  for (const [tok, p] of alts) {
    const row = document.createElement("div");
    row.className = "tip-row" + (tok === span.dataset.token ? " chosen" : "");
    const a = document.createElement("span"); a.textContent = visible(tok);
    const b = document.createElement("span"); b.textContent = pct(p);
    row.append(a, b);
    tip.appendChild(row);
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
function hideTip() { $("tooltip").hidden = true; }

async function generate() {
  if (state.abort) state.abort.abort();
  const out = $("output");
  out.textContent = "";
  hideTip();
  const chat = $("chat").checked;
  const seed = num("seed", (x) => parseInt(x, 10));
  const body = {
    model: "default", stream: true, temperature: currentT(),
    max_tokens: num("max-tokens", (x) => parseInt(x, 10)) || 40,
    logprobs_mode: $("mode").value, ...samplerFields(),
  };
  if (seed !== null) body.seed = seed;
  if (chat) { body.messages = [{ role: "user", content: $("prompt").value }]; body.logprobs = true; body.top_logprobs = 5; }
  else { body.prompt = $("prompt").value; body.logprobs = 5; }
  if (!chat) { const p = document.createElement("span"); p.className = "prompt"; p.textContent = $("prompt").value; out.appendChild(p); }
  state.abort = new AbortController();
  $("generate").disabled = true; $("stop").disabled = false;
  setStatus("generating…");
  let count = 0, finish = null;
  try {
    const res = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.abort.signal,
    });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || String(res.status));
    }
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
        for (const c of msg.choices || []) {
          const info = chat ? chatInfo(c) : completionInfo(c);
          const text = chat ? (c.delta && c.delta.content) || "" : c.text || "";
          if (info) count++;
          if (text) addToken(out, text, info);
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
    setStatus(`${count} tokens` + (finish ? `, finish_reason: ${finish}` : ""));
  } catch (err) {
    if (err.name === "AbortError") setStatus(`stopped after ${count} tokens`);
    else setStatus("error: " + err.message, true);
  } finally {
    $("generate").disabled = false; $("stop").disabled = true;
    state.abort = null;
  }
}

function completionInfo(c) {
  const lp = c.logprobs;
  if (!lp || !lp.tokens || !lp.tokens.length) return null;
  const alts = Object.entries(lp.top_logprobs[0] || {}).map(([t, l]) => [t, Math.exp(l)]);
  return { token: lp.tokens[0], p: Math.exp(lp.token_logprobs[0]), alts };
}
function chatInfo(c) {
  const lp = c.logprobs && c.logprobs.content;
  if (!lp || !lp.length) return null;
  const e = lp[0];
  return { token: e.token, p: Math.exp(e.logprob), alts: e.top_logprobs.map((a) => [a.token, Math.exp(a.logprob)]) };
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

async function init() {
  drawOrder();
  $("temp-slider").addEventListener("input", onSlider);
  $("temp-value").addEventListener("input", () => {
    $("temp-slider").value = tToSlider(currentT());
    syncTempLabel(); drawChart(); scheduleProcessed();
  });
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
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  const out = $("output");
  out.addEventListener("mouseover", showTip);
  out.addEventListener("focusin", showTip);
  out.addEventListener("mouseleave", hideTip);
  out.addEventListener("focusout", hideTip);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideTip(); });
  syncTempLabel();
  try {
    const res = await fetch("/v1/info", { headers: headers() });
    if (res.ok) {
      const info = await res.json();
      $("model-name").textContent = info.model;
      const f = info.facts || {};
      if (f.parameters) {
        const size = f.parameters >= 1e6 ? (f.parameters / 1e6).toFixed(1) + "M" : (f.parameters / 1e3).toFixed(1) + "K";
        $("model-facts").textContent = `· ${size} parameters · vocabulary ${f.vocab_size.toLocaleString()} · context ${f.context_length}`;
      }
      if (f.has_chat_template === false) $("chat").parentElement.title = "no chat template: a plain role: text transcript is used";
      if (info.limits) $("max-tokens").max = info.limits.max_tokens;
    } else if (res.status === 401) {
      setStatus("this server needs an API key: open “API key” below the controls", true);
      document.querySelector("details").open = true;
      return;
    }
  } catch (err) { /* the distribution call below reports the problem */ }
  loadDistribution();
}

init();
