// The network around this peer, as an SVG: this peer in the middle, the
// peers on rings around it, direct sessions as solid edges, sessions
// through a relay as dashed edges to the relay (when it is a peer of ours),
// and the circuits this peer relays as dotted edges between their two ends.
// A plain radial layout: stable (a peer keeps its place while it stays),
// and cheap at a few hundred peers. Names are in <title> text nodes.

import { clear, s, shortId } from "./dom.js";
import { state } from "./state.js";

const RADIUS = 210;
const PER_RING = 40;

function layout(ids) {
  const places = new Map();
  const rings = Math.max(1, Math.ceil(ids.length / PER_RING));
  ids.forEach((id, i) => {
    const ring = i % rings;
    const index = Math.floor(i / rings);
    const onRing = Math.ceil(ids.length / rings);
    const angle = (2 * Math.PI * index) / Math.max(1, onRing) + ring * 0.3;
    const r = RADIUS * (rings === 1 ? 1 : 0.55 + (0.45 * ring) / (rings - 1));
    places.set(id, [r * Math.cos(angle), r * Math.sin(angle)]);
  });
  return places;
}

export function renderGraph() {
  const svg = document.getElementById("graph");
  clear(svg);
  const ids = [...state.peers.keys()].sort();
  const places = layout(ids);
  places.set("self", [0, 0]);
  const edges = s("g", { class: "edges" });
  const nodes = s("g", { class: "nodes" });
  for (const id of ids) {
    const peer = state.peers.get(id);
    const [x, y] = places.get(id);
    const relayed = Boolean(peer.relay);
    const [fx, fy] = relayed && places.has(peer.relay) ? places.get(peer.relay) : [0, 0];
    edges.append(s("line", { x1: fx, y1: fy, x2: x, y2: y, class: relayed ? "edge relayed" : "edge direct" }));
    const title = s("title", {}, `${id}\n${peer.agent || ""}\n${relayed ? "via relay " + peer.relay : peer.address}`);
    const node = s("g", { class: `node ${peer.direction}`, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`, "data-peer": id },
      s("circle", { r: ids.length > 60 ? 4 : 7 }), title);
    if (ids.length <= 24) node.append(s("text", { y: 18, "text-anchor": "middle" }, shortId(id).slice(0, 6)));
    nodes.append(node);
  }
  const relay = state.providerDetails.get("relay");
  for (const circuit of (relay && relay.circuits) || []) {
    const a = places.get(circuit.src);
    const b = places.get(circuit.dst);
    if (a && b) edges.append(s("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "edge circuit" }));
  }
  const me = state.status ? state.status.peer_id : "this peer";
  nodes.append(s("g", { class: "node self" }, s("circle", { r: 11 }), s("title", {}, me),
    s("text", { y: 26, "text-anchor": "middle" }, "this peer")));
  svg.append(edges, nodes);
}
