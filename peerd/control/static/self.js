// This peer: identity, addresses, uptime, version, providers, traffic.

import { clear, fmtBytes, fmtDuration, h, setText } from "./dom.js";
import { state } from "./state.js";

export function renderSelf() {
  const st = state.status;
  if (!st) return;
  setText(document.getElementById("self-id"), st.peer_id);
  const facts = document.getElementById("self-facts");
  clear(facts);
  const c = st.connections || {};
  const uptime = (st.uptime || 0) + (Date.now() - state.statusAt) / 1000;
  const rows = [
    ["PeerID", st.peer_id],
    ["addresses", (st.addresses || []).join("\n") || "-"],
    ["uptime", fmtDuration(uptime)],
    ["version", `${st.agent} (${st.version})`],
    ["providers", Object.entries(st.providers || {}).map(([n, p]) => `${n}/${p.version}`).join(", ") || "-"],
    ["connections", `${c.total ?? 0} (${c.inbound ?? 0} in, ${c.outbound ?? 0} out, max ${c.max ?? "?"})`],
    ["traffic", `${fmtBytes(st.bytes_in || 0)} in, ${fmtBytes(st.bytes_out || 0)} out`],
  ];
  for (const [label, value] of rows) facts.append(h("dt", {}, label), h("dd", { class: label === "PeerID" || label === "addresses" ? "mono" : "" }, value));
}

export function renderEvents() {
  const list = document.getElementById("event-log");
  clear(list);
  for (const event of state.events.slice(-60).reverse()) {
    const when = new Date(event.time * 1000).toLocaleTimeString();
    const { id, type, time, download, ...fields } = event;
    if (download) Object.assign(fields, { name: download.name, state: download.state });
    const text = Object.entries(fields)
      .filter(([, v]) => v !== null && typeof v !== "object")
      .map(([k, v]) => `${k}=${v}`).join(" ");
    list.append(h("li", { dataset: { type } }, h("time", {}, when), h("b", {}, type), h("span", {}, text)));
  }
}
