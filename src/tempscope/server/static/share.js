// The view as a link: prompt, temperatures, samplers and seed in the URL's fragment. Opening the
// link sets the controls and runs the same (seeded) generation again, which gives the same text.
"use strict";

import { $, roundT, setStatus } from "./util.js";
import { applyFields, samplerFields } from "./samplers.js";

let last = { view: null, seed: null };

export function readLink() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (!h.has("prompt")) return null;
  let samplers = null;
  try { samplers = JSON.parse(h.get("s") || "null"); } catch (e) { samplers = null; }
  return {
    prompt: h.get("prompt"), chat: h.get("chat") === "1", t: h.get("t"), temps: h.get("temps"),
    seed: h.get("seed"), max: h.get("max"), samplers, view: h.get("view"),
    colour: h.get("colour"), mode: h.get("mode"),
  };
}

// Controls first (before the first request), samplers once their controls exist.
export function applyLink(link, setT) {
  $("prompt").value = link.prompt;
  $("chat").checked = link.chat;
  if (link.t !== null && Number.isFinite(+link.t)) setT(+link.t);
  if (link.temps) $("lab-temps").value = link.temps;
  if (link.seed !== null) $("seed").value = link.seed;
  if (link.max !== null) $("max-tokens").value = link.max;
  for (const [id, value] of [["colour-mode", link.colour], ["mode", link.mode]]) {
    if (value && [...$(id).options].some((o) => o.value === value)) $(id).value = value;
  }
}
export function applyLinkSamplers(link) {
  const unknown = applyFields(link.samplers || {});
  if (unknown.length) setStatus(`the link sets ${unknown.join(", ")}, which this server lacks`, true);
}

export function writeLink(t, run) {
  if (run) last = run;
  const h = new URLSearchParams();
  h.set("prompt", $("prompt").value);
  if ($("chat").checked) h.set("chat", "1");
  h.set("t", String(roundT(t)));
  h.set("temps", $("lab-temps").value);
  if (last.seed !== null) h.set("seed", String(last.seed));
  h.set("max", $("max-tokens").value);
  const s = samplerFields();
  if (Object.keys(s).length) h.set("s", JSON.stringify(s));
  if (last.view) h.set("view", last.view);
  h.set("colour", $("colour-mode").value);
  h.set("mode", $("mode").value);
  history.replaceState(null, "", "#" + h.toString());
  $("share-url").value = location.href;
  return location.href;
}

export async function copyLink(t) {
  const url = writeLink(t);
  try {
    await navigator.clipboard.writeText(url);
    setStatus("link copied");
  } catch (err) {  // no clipboard permission: leave the link selected in its box
    $("share-url").select();
    setStatus("the link is in the box below: copy it from there");
  }
}
