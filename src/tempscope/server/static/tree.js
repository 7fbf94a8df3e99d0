// The token tree: the likeliest continuations of the prompt to depth d (POST /v1/lab/tree), each
// node with its probability and the probability of the whole path; choosing a node makes the
// prompt end there.
"use strict";

import { $, el, num, pct, postJSON, roundT, setStatus, visible } from "./util.js";
import { samplerFields } from "./samplers.js";

let onPrompt = () => {};
export function onNewPrompt(cb) { onPrompt = cb; }

export async function expandTree(t) {
  const out = $("tree");
  const body = {
    prompt: $("prompt").value, chat: $("chat").checked, temperature: t,
    depth: num("tree-depth", (x) => parseInt(x, 10)) || 3,
    top: num("tree-top", (x) => parseInt(x, 10)) || 3,
    min_prob: num("tree-min", parseFloat) ?? 0.05, ...samplerFields(),
  };
  out.dataset.state = "loading";
  setStatus("expanding the tree…");
  try {
    const data = await postJSON("/v1/lab/tree", body);
    draw(data, body.prompt);
    setStatus(`tree: ${data.nodes.length} nodes at T = ${roundT(t)}` +
      (data.truncated ? " (stopped at the node limit)" : ""));
  } catch (err) {
    out.textContent = "";
    setStatus("error: " + err.message, true);
  } finally {
    out.dataset.state = "done";
  }
}

function draw(data, prompt) {
  const out = $("tree");
  out.textContent = "";
  const kids = new Map();
  for (const n of data.nodes) {
    const key = n.parent === null ? -1 : n.parent;
    if (!kids.has(key)) kids.set(key, []);
    kids.get(key).push(n);
  }
  const root = el("ul", "tree");
  root.setAttribute("role", "tree");
  root.setAttribute("aria-label", "continuations of the prompt");
  const top = el("li", "tree-root");
  top.setAttribute("role", "treeitem");
  top.setAttribute("aria-expanded", "true");
  top.appendChild(el("span", "prompt", "…" + prompt.slice(-40)));
  const grow = (li, key) => {
    const children = kids.get(key) || [];
    if (!children.length) return;
    const ul = el("ul");
    ul.setAttribute("role", "group");
    for (const n of children) {
      const item = el("li");
      item.setAttribute("role", "treeitem");
      const b = el("button", "node" + (n.end ? " end" : ""));
      b.type = "button";
      b.dataset.id = n.id;
      b.dataset.depth = n.depth;
      b.dataset.pathProb = n.path_prob.toFixed(6);
      b.dataset.pathText = n.path_text;
      b.dataset.parent = n.parent === null ? "" : n.parent;
      b.append(el("span", "tok", visible(n.text)), el("span", "p", pct(n.prob)),
        el("span", "pp", "path " + pct(n.path_prob)));
      const meter = el("span", "pbar");
      meter.style.width = Math.max(1, 100 * n.path_prob) + "%";
      b.appendChild(meter);
      b.setAttribute("aria-label", `${visible(n.path_text)}: ${pct(n.prob)} here, path ${pct(n.path_prob)}; make it the prompt`);
      b.addEventListener("click", () => choose(n, prompt));
      item.appendChild(b);
      if (kids.has(n.id)) item.setAttribute("aria-expanded", "true");
      grow(item, n.id);
      ul.appendChild(item);
    }
    li.appendChild(ul);
  };
  grow(top, -1);
  root.appendChild(top);
  out.appendChild(root);
  if (!data.nodes.length) {
    out.appendChild(el("p", "help", "No continuation is that likely here: lower the cut-off or the temperature."));
  }
}

function choose(node, prompt) {
  $("prompt").value = prompt + node.path_text;
  setStatus(`prompt extended by “${visible(node.path_text)}” (path probability ${pct(node.path_prob)})`);
  $("prompt").focus();
  onPrompt();
}
