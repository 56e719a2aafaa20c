// File transfers: one card per download with progress, rate, ETA, its
// sources, and (on request) a piece map: which blocks came from which peer.

import { api } from "./api.js";
import { clear, fmtBytes, fmtDuration, fmtRate, h, setText, shortId } from "./dom.js";
import { mark, throttled } from "./schedule.js";
import { state } from "./state.js";

const FINAL = new Set(["complete", "failed", "cancelled"]);
const PALETTE = ["#2d6cdf", "#d9822b", "#2f9e44", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#5c940d"];
const cards = new Map();
const openMaps = new Set();
const pieceFetchers = new Map();

function progressOf(d) {
  if (d.state === "complete") return 1;
  if (!d.size) return d.blocks ? d.blocks_done / d.blocks : 0;
  return Math.min(1, d.bytes_done / d.size);
}

function makeCard(cid) {
  const parts = {
    name: h("span", { class: "name" }),
    state: h("span", { class: "state" }),
    bar: h("div", { class: "bar" }),
    figures: h("span", { class: "figures" }),
    sources: h("span", { class: "sources" }),
    error: h("div", { class: "error" }),
    cancel: h("button", { type: "button", class: "cancel" }, "Cancel"),
    toggle: h("button", { type: "button", class: "toggle" }, "Pieces"),
    map: h("div", { class: "piece-map", hidden: true }),
  };
  parts.progress = h("div", { class: "progress", role: "progressbar" }, parts.bar);
  parts.cancel.addEventListener("click", () => cancel(cid, parts.error));
  parts.toggle.addEventListener("click", () => {
    if (openMaps.has(cid)) openMaps.delete(cid);
    else {
      openMaps.add(cid);
      fetchPieces(cid);
    }
    mark("transfers");
  });
  const card = h("article", { class: "download", dataset: { cid } },
    h("div", { class: "line" }, parts.name, parts.state, parts.toggle, parts.cancel),
    h("div", { class: "cid mono" }, cid),
    parts.progress,
    h("div", { class: "line" }, parts.figures, parts.sources),
    parts.error, parts.map);
  return { card, parts };
}

async function cancel(cid, out) {
  try {
    await api.del(`providers/files/downloads/${encodeURIComponent(cid)}`);
  } catch (e) {
    setText(out, e.message);
  }
}

export function fetchPieces(cid) {
  if (!pieceFetchers.has(cid)) {
    pieceFetchers.set(cid, throttled(async () => {
      try {
        state.pieces.set(cid, await api.get(`providers/files/downloads/${encodeURIComponent(cid)}/pieces`));
        mark("transfers");
      } catch (e) {
        state.pieces.set(cid, { error: e.message });
      }
    }, 1000));
  }
  pieceFetchers.get(cid)();
}

/** A download event came: refresh its piece map if it is shown. */
export function downloadChanged(cid) {
  if (openMaps.has(cid)) fetchPieces(cid);
}

function drawMap(container, pieces) {
  clear(container);
  if (!pieces) return container.append("loading…");
  if (pieces.error) return container.append(pieces.error);
  const bytes = Uint8Array.from(atob(pieces.map || ""), (c) => c.charCodeAt(0));
  const n = pieces.blocks || bytes.length;
  const columns = Math.min(128, Math.max(1, n));
  const cell = 6;
  const canvas = h("canvas", { width: columns * cell, height: Math.ceil(n / columns) * cell });
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < n; i++) {
    const v = bytes[i] || 0;
    ctx.fillStyle = v === 0 ? "#e6e8eb" : v === 1 ? "#868e96" : PALETTE[(v - 2) % PALETTE.length];
    ctx.fillRect((i % columns) * cell, Math.floor(i / columns) * cell, cell - 1, cell - 1);
  }
  const legend = h("ul", { class: "legend" },
    h("li", {}, h("span", { class: "swatch missing" }), "missing"),
    h("li", {}, h("span", { class: "swatch local" }), "had already"));
  (pieces.sources || []).forEach((peer, k) => {
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = PALETTE[k % PALETTE.length];
    legend.append(h("li", { title: peer }, swatch, shortId(peer)));
  });
  container.append(canvas, legend);
}

export function renderTransfers() {
  const list = document.getElementById("downloads");
  for (const [cid, entry] of cards) {
    if (!state.downloads.has(cid)) {
      entry.card.remove();
      cards.delete(cid);
    }
  }
  const sorted = [...state.downloads.values()].sort((a, b) => (b.started || 0) - (a.started || 0));
  let previous = null;
  for (const d of sorted) {
    let entry = cards.get(d.cid);
    if (!entry) {
      entry = makeCard(d.cid);
      cards.set(d.cid, entry);
    }
    const p = entry.parts;
    const fraction = progressOf(d);
    setText(p.name, d.name || "(name not known yet)");
    setText(p.state, d.state);
    entry.card.dataset.state = d.state;
    entry.card.dataset.done = String(d.bytes_done || 0);
    p.bar.style.width = `${(fraction * 100).toFixed(1)}%`;
    p.progress.setAttribute("aria-valuenow", (fraction * 100).toFixed(1));
    const size = d.size === null || d.size === undefined ? "?" : fmtBytes(d.size);
    const eta = FINAL.has(d.state) ? "" : `, ETA ${fmtDuration(d.eta)}`;
    setText(p.figures, `${fmtBytes(d.bytes_done || 0)} of ${size} (${(fraction * 100).toFixed(1)}%), ${fmtRate(d.rate)}${eta}`);
    const sources = d.peers || 0;
    setText(p.sources, `${sources} source${sources === 1 ? "" : "s"}`);
    setText(p.error, d.error || "");
    p.cancel.hidden = FINAL.has(d.state);
    p.map.hidden = !openMaps.has(d.cid);
    if (openMaps.has(d.cid)) drawMap(p.map, state.pieces.get(d.cid));
    const wanted = previous ? previous.nextSibling : list.firstChild;
    if (wanted !== entry.card) list.insertBefore(entry.card, wanted);
    previous = entry.card;
  }
  if (!sorted.length && !list.querySelector(".empty")) list.append(h("p", { class: "empty" }, "no downloads"));
  if (sorted.length) list.querySelector(".empty")?.remove();
}
