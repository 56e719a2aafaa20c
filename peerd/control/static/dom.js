// Building DOM nodes. Text always goes in as text nodes (textContent):
// nothing here ever parses a string as HTML, so peer-controlled strings
// (agent strings, file names) cannot inject markup or script.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("td", {class: "num", dataset: {peer: id}}, "text", childNode, ...) */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  return fill(node, props, children);
}

/** Like h() for SVG elements. */
export function s(tag, props = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  return fill(node, props, children);
}

function fill(node, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Set a node's text only when it changed (cheap redraws). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "?";
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n;
  for (const unit of units) {
    value /= 1024;
    if (value < 1024 || unit === "TiB") return `${value.toFixed(1)} ${unit}`;
  }
  return `${n} B`;
}

export function fmtRate(n) {
  return `${fmtBytes(n || 0)}/s`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}

/** The first 6 characters of a PeerID, for tight spots (the full ID is in the title). */
export function shortId(peerId) {
  return String(peerId || "").slice(0, 13);
}

export function fmtProviders(providers) {
  const names = Object.keys(providers || {}).sort();
  return names.length ? names.map((n) => `${n}/${providers[n]}`).join(", ") : "-";
}
