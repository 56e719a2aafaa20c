// The peers table: one row per peer, kept by PeerID and updated in place.

import { fmtBytes, fmtDuration, fmtProviders, h, setText } from "./dom.js";
import { state } from "./state.js";

const rows = new Map();

function pathOf(peer) {
  return peer.relay ? `via relay ${peer.relay}` : `direct ${peer.address}`;
}

function makeRow(peerId) {
  const cells = {
    id: h("td", { class: "mono peer-id", title: peerId }, peerId),
    agent: h("td", { class: "agent" }),
    direction: h("td"),
    path: h("td", { class: "path" }),
    providers: h("td"),
    bytesIn: h("td", { class: "num" }),
    bytesOut: h("td", { class: "num" }),
    since: h("td", { class: "num" }),
  };
  const row = h("tr", { dataset: { peer: peerId } }, Object.values(cells));
  return { row, cells };
}

export function renderPeers() {
  const tbody = document.querySelector("#peers tbody");
  const now = Date.now() / 1000;
  for (const [peerId, entry] of rows) {
    if (!state.peers.has(peerId)) {
      entry.row.remove();
      rows.delete(peerId);
    }
  }
  const sorted = [...state.peers.values()].sort((a, b) => a.since - b.since);
  let previous = null;
  for (const peer of sorted) {
    let entry = rows.get(peer.peer_id);
    if (!entry) {
      entry = makeRow(peer.peer_id);
      rows.set(peer.peer_id, entry);
    }
    const c = entry.cells;
    setText(c.agent, peer.agent || "");
    setText(c.direction, peer.direction || "");
    setText(c.path, pathOf(peer));
    entry.row.classList.toggle("relayed", Boolean(peer.relay));
    setText(c.providers, fmtProviders(peer.providers));
    setText(c.bytesIn, fmtBytes(peer.bytes_in || 0));
    setText(c.bytesOut, fmtBytes(peer.bytes_out || 0));
    setText(c.since, fmtDuration(now - peer.since));
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (wanted !== entry.row) tbody.insertBefore(entry.row, wanted);
    previous = entry.row;
  }
  setText(document.getElementById("peer-count"), `${state.peers.size} connected`);
}
