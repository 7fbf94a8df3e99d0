// The sampler controls, built from the server's registry (GET /v1/samplers): every sampler's
// fields with their ranges and docs, the order they run in (editable), "temperature last" and
// the presets. The page sends whatever field names the registry lists; it knows none itself
// beyond the three quick fields at the top (top-k, top-p, min-p) and the temperature slider.
"use strict";

import { $, el, getJSON } from "./util.js";

// Registry fields that have their own control elsewhere on the page.
const QUICK = { top_k: "top-k", top_p: "top-p", min_p: "min-p" };
const OWN_CONTROL = new Set(["temperature"]);  // the temperature slider

const fields = new Map();  // request field -> { input, type, sampler }
let order = [];            // sampler names in the order they run
let defaultOrder = [];
let presets = {};
let samplerOf = new Map(); // sampler name -> its field names
let changed = () => {};
let setTemperature = () => {};

// Quick fields work even when the server has no registry.
for (const [name, id] of Object.entries(QUICK)) {
  fields.set(name, { input: $(id), type: name === "top_k" ? "int" : "float", sampler: name });
}

export function onChange(cb) { changed = cb; }
export function onTemperature(cb) { setTemperature = cb; }

// ---- reading and writing fields ---------------------------------------------------------------
function read(meta) {
  const input = meta.input;
  if (meta.type === "bool") return input.checked ? true : undefined;
  const raw = input.value.trim();
  input.removeAttribute("aria-invalid");
  if (raw === "") return undefined;
  let v;
  switch (meta.type) {
    case "int": v = /^-?\d+$/.test(raw) ? parseInt(raw, 10) : NaN; break;
    case "float": v = Number(raw); break;
    case "strings":
      try { v = JSON.parse(raw); } catch (e) { v = raw.split(",").map((s) => s.trim()).filter(Boolean); }
      if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) v = NaN;
      break;
    case "token_ids":
      v = raw.split(/[\s,]+/).filter(Boolean).map(Number);
      if (!v.every(Number.isInteger)) v = NaN;
      break;
    case "token_bias":
      v = {};
      for (const pair of raw.split(/[\s,]+/).filter(Boolean)) {
        const [id, bias] = pair.split(":");
        if (!/^\d+$/.test(id) || !Number.isFinite(Number(bias))) { v = NaN; break; }
        v[id] = Number(bias);
      }
      break;
    default: v = raw;
  }
  if (typeof v === "number" && !Number.isFinite(v)) {
    input.setAttribute("aria-invalid", "true");  // shown red; the field is left out
    return undefined;
  }
  return v;
}

function write(meta, value) {
  const input = meta.input;
  if (meta.type === "bool") { input.checked = !!value; return; }
  if (value === null || value === undefined) { input.value = ""; return; }
  if (meta.type === "strings") input.value = JSON.stringify(value);
  else if (meta.type === "token_ids") input.value = value.join(", ");
  else if (meta.type === "token_bias") input.value = Object.entries(value).map(([k, b]) => `${k}:${b}`).join(", ");
  else input.value = String(value);
}

function isOn(sampler) {
  return (samplerOf.get(sampler) || []).some((f) => fields.has(f) && read(fields.get(f)) !== undefined);
}

// Sampler knobs that are set: what changes the distribution besides the temperature.
export function activeFields() {
  const f = {};
  for (const [name, meta] of fields) {
    const v = read(meta);
    if (v !== undefined) f[name] = v;
  }
  return f;
}

// Every sampler field of a request: the knobs, plus the order when it was changed and
// temperature_last when it is on.
export function samplerFields() {
  const f = activeFields();
  if ($("temperature-last").checked) f.temperature_last = true;
  if (order.join() !== defaultOrder.join()) f.sampler_order = order.slice();
  return f;
}

// Set the controls to exactly these fields (a preset, a shared link); the rest goes off.
export function applyFields(values) {
  for (const meta of fields.values()) write(meta, null);
  $("temperature-last").checked = false;
  order = defaultOrder.slice();
  const unknown = [];
  for (const [name, value] of Object.entries(values || {})) {
    if (name === "temperature") setTemperature(value);
    else if (name === "temperature_last") $("temperature-last").checked = !!value;
    else if (name === "sampler_order" && Array.isArray(value)) order = value.slice();
    else if (fields.has(name)) write(fields.get(name), value);
    else unknown.push(name);
  }
  drawOrder();
  return unknown;
}

// Point at the control of a field the server refused (its error names the field).
export function markInvalid(param) {
  const meta = param && fields.get(param);
  if (meta) meta.input.setAttribute("aria-invalid", "true");
}

// ---- the order list: move-up / move-down buttons (keyboard friendly) -------------------------
function drawOrder() {
  const ol = $("order");
  ol.textContent = "";
  order.forEach((name, i) => {
    const li = el("li", isOn(name) ? "on" : "");
    li.appendChild(el("span", "", name));
    for (const [dir, sym, word] of [[-1, "↑", "up"], [1, "↓", "down"]]) {
      const b = el("button", "mini", sym);
      b.type = "button";
      b.setAttribute("aria-label", `move ${name} ${word}`);
      b.disabled = (i + dir < 0) || (i + dir >= order.length);
      b.addEventListener("click", () => {
        const j = i + dir;
        [order[i], order[j]] = [order[j], order[i]];
        drawOrder();
        const again = ol.children[j] && ol.children[j].querySelectorAll("button")[dir < 0 ? 0 : 1];
        if (again && !again.disabled) again.focus();
        changed();
      });
      li.appendChild(b);
    }
    ol.appendChild(li);
  });
}

// ---- building the controls from the registry -------------------------------------------------
function rangeText(f) {
  const lo = f.min === null || f.min === undefined ? "-∞" : f.min;
  const hi = f.max === null || f.max === undefined ? "∞" : f.max;
  if (f.type !== "int" && f.type !== "float") return "";
  return `${f.min_open ? "(" : "["}${lo}, ${hi}${f.max_open ? ")" : "]"}`;
}

const PLACEHOLDER = {
  strings: 'JSON list, e.g. ["\\n", ":"]', token_ids: "ids, e.g. 11, 42",
  token_bias: "id:bias, e.g. 42:-100",
};

function fieldControl(f, sampler) {
  const wrap = el("div", "field");
  const id = "s-" + f.name;
  const help = el("span", "help", [f.doc, f.hint, rangeText(f)].filter(Boolean).join(" · "));
  help.id = id + "-help";
  const input = el("input");
  input.id = id;
  input.dataset.field = f.name;
  input.setAttribute("aria-describedby", help.id);
  if (f.type === "bool") {
    input.type = "checkbox";
    const label = el("label", "inline");
    label.append(input, " " + f.name);
    wrap.append(label, help);
  } else {
    if (f.type === "int" || f.type === "float") {
      input.type = "number";
      input.step = f.type === "int" ? "1" : "any";
      if (f.min !== null && f.min !== undefined) input.min = f.min;
      if (f.max !== null && f.max !== undefined) input.max = f.max;
    } else {
      input.type = "text";
      input.spellcheck = false;
    }
    const dflt = f.default === null || f.default === undefined ? null
      : Array.isArray(f.default) ? JSON.stringify(f.default) : String(f.default);
    input.placeholder = dflt !== null ? `default ${dflt}` : PLACEHOLDER[f.type] || "off";
    const label = el("label", "", f.name);
    label.htmlFor = id;
    wrap.append(label, input, help);
  }
  input.addEventListener(f.type === "bool" ? "change" : "input", () => { drawOrder(); changed(); });
  fields.set(f.name, { input, type: f.type, sampler });
  return wrap;
}

function build(registry) {
  const box = $("advanced-fields");
  box.textContent = "";
  samplerOf = new Map();
  for (const s of registry.samplers) {
    samplerOf.set(s.name, s.fields.map((f) => f.name));
    const set = el("fieldset", "sampler");
    set.dataset.sampler = s.name;
    const legend = el("legend", "", s.name);
    if (s.stateful) legend.append(el("span", "help", " (stateful: a step view starts it fresh)"));
    set.append(legend, el("p", "help", s.doc));
    for (const f of s.fields) {
      if (OWN_CONTROL.has(f.name)) { set.append(el("p", "help", `${f.name}: the slider above`)); continue; }
      if (QUICK[f.name]) {
        const input = $(QUICK[f.name]);
        if (f.min !== null && f.min !== undefined) input.min = f.min;
        if (f.max !== null && f.max !== undefined) input.max = f.max;
        fields.set(f.name, { input, type: f.type, sampler: s.name });
        set.append(el("p", "help", `${f.name}: the quick field above`));
        continue;
      }
      set.append(fieldControl(f, s.name));
    }
    box.appendChild(set);
  }
  defaultOrder = (registry.default_order || []).slice();
  order = defaultOrder.slice();
  presets = registry.presets || {};
  const select = $("preset");
  for (const name of Object.keys(presets)) {
    const o = el("option", "", name);
    o.value = name;
    select.appendChild(o);
  }
  $("advanced-count").textContent = `(${registry.samplers.length})`;
  drawOrder();
}

// Load the registry; a server without one leaves the quick fields only.
export async function loadSamplers() {
  try {
    build(await getJSON("/v1/samplers"));
  } catch (err) {
    $("advanced-count").textContent = "(this server lists no samplers: quick fields only)";
    $("preset").disabled = true;
    $("order-reset").hidden = true;
  }
  for (const input of Object.values(QUICK).map($)) input.addEventListener("input", drawOrder);
  $("temperature-last").addEventListener("change", changed);
  $("order-reset").addEventListener("click", () => { order = defaultOrder.slice(); drawOrder(); changed(); });
  $("preset").addEventListener("change", () => {
    const name = $("preset").value;
    if (!name || !presets[name]) return;
    applyFields(presets[name]);
    changed();
  });
}
