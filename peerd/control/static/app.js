// The dashboard: snapshots from the API at load, then the event stream keeps
// everything current. Nothing polls: lists are refetched only when an event
// says they changed (or after a gap in the stream), at a bounded rate.

import { api, followEvents } from "./api.js";
import { renderGraph } from "./graph.js";
import { renderPeers } from "./peers.js";
import { DETAIL_ROUTES, fetchDetail, renderProviders } from "./providers.js";
import { counters, mark, register, throttled } from "./schedule.js";
import { renderEvents, renderSelf } from "./self.js";
import { renderShares } from "./shares.js";
import { rememberEvent, state } from "./state.js";
import { downloadChanged, renderTransfers } from "./transfers.js";

register("self", renderSelf);
register("peers", renderPeers);
register("graph", renderGraph);
register("transfers", renderTransfers);
register("shares", renderShares);
register("providers", renderProviders);
register("events", renderEvents);

function hasProvider(name) {
  return Boolean(state.status && state.status.providers && name in state.status.providers);
}

async function loadStatus() {
  state.status = await api.get("status");
  state.statusAt = Date.now();
  mark("self", "providers", "graph");
}

async function loadPeers() {
  const { peers } = await api.get("peers");
  state.peers = new Map(peers.map((p) => [p.peer_id, p]));
  mark("peers", "graph");
}

async function loadDownloads() {
  if (!hasProvider("files")) return;
  const { downloads } = await api.get("providers/files/downloads");
  state.downloads = new Map(downloads.map((d) => [d.cid, d]));
  mark("transfers");
}

async function loadShares() {
  if (!hasProvider("files")) return;
  state.shares = (await api.get("providers/files/shares")).shares;
  mark("shares");
}

async function loadDetails() {
  await Promise.all(Object.keys(DETAIL_ROUTES).filter(hasProvider).map(fetchDetail));
  mark("providers", "graph");
}

const refreshShares = throttled(() => loadShares().catch(showError), 500);
const refreshPeers = throttled(() => loadPeers().catch(showError), 1000);
const refreshDetail = {};
for (const name of Object.keys(DETAIL_ROUTES)) {
  refreshDetail[name] = throttled(() => fetchDetail(name).then(() => mark("providers", "graph")), 1000);
}

async function loadAll() {
  await loadStatus();
  await Promise.all([loadPeers(), loadDownloads(), loadShares(), loadDetails()]);
}

function showError(e) {
  if (e.status === 401) {
    document.getElementById("login-needed").hidden = false;
    setState("logged-out");
  }
  console.warn(e.message);
}

function setState(text) {
  const badge = document.getElementById("conn-state");
  badge.dataset.state = text;
  badge.textContent = text;
}

function onEvent(event) {
  const type = event.type;
  if (type === "stats.tick") {
    state.status = event.status;
    state.statusAt = Date.now();
    for (const [id, [bytesIn, bytesOut]] of Object.entries(event.peers || {})) {
      const peer = state.peers.get(id);
      if (peer) Object.assign(peer, { bytes_in: bytesIn, bytes_out: bytesOut });
    }
    mark("self", "peers", "providers");
    return;
  }
  rememberEvent(event);
  mark("events");
  if (type === "stream.gap") {
    loadAll().catch(showError);
  } else if (type === "peer.connected") {
    state.peers.set(event.peer, {
      peer_id: event.peer, address: event.address, direction: event.direction, relay: event.relay,
      agent: event.agent, providers: event.providers || {}, since: event.since, bytes_in: 0, bytes_out: 0,
    });
    refreshPeers();
    mark("peers", "graph");
  } else if (type === "peer.disconnected") {
    state.peers.delete(event.peer);
    mark("peers", "graph");
  } else if (type.startsWith("download.")) {
    if (event.download) state.downloads.set(event.download.cid, event.download);
    downloadChanged(event.cid || (event.download && event.download.cid));
    if (type === "download.completed") refreshShares(); // it is shared from now on
    mark("transfers");
  } else if (type.startsWith("share.")) {
    refreshShares();
  } else if (type.startsWith("storage.") && refreshDetail.storage) {
    refreshDetail.storage();
  } else if (type.startsWith("relay.") && refreshDetail.relay) {
    refreshDetail.relay();
  }
}

function bindForm(id, submit) {
  const form = document.getElementById(id);
  const out = form.querySelector("output");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    const button = form.querySelector("button");
    button.disabled = true;
    out.className = "result";
    out.textContent = "…";
    try {
      out.textContent = await submit(data);
      out.classList.add("ok");
    } catch (err) {
      out.textContent = err.message;
      out.classList.add("error");
      if (err.status === 401) showError(err);
    } finally {
      button.disabled = false;
    }
  });
}

bindForm("connect-form", async ({ address }) => {
  const { peer } = await api.post("peers", { address: address.trim() });
  return `connected to ${peer.peer_id} (${peer.address})`;
});
bindForm("share-form", async ({ path }) => {
  const { share } = await api.post("providers/files/shares", { path: path.trim() });
  refreshShares();
  return `shared ${share.name} as ${share.cid}`;
});
bindForm("get-form", async ({ cid, directory }) => {
  localStorage.setItem("peerd.directory", directory.trim());
  const { download } = await api.post("providers/files/downloads", { cid: cid.trim(), directory: directory.trim() });
  state.downloads.set(download.cid, download);
  mark("transfers");
  return `downloading ${download.cid}`;
});

document.getElementById("copy-id").addEventListener("click", async () => {
  const id = state.status && state.status.peer_id;
  if (!id) return;
  try {
    await navigator.clipboard.writeText(id);
  } catch (e) {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById("self-id"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
  }
});

const savedDirectory = localStorage.getItem("peerd.directory");
if (savedDirectory) document.querySelector("#get-form [name=directory]").value = savedDirectory;

async function start() {
  try {
    await loadAll();
  } catch (e) {
    showError(e);
    return;
  }
  // On reconnect EventSource resumes from its last id; a restarted daemon
  // or a resume past the buffer answers with stream.gap, which reloads.
  followEvents(onEvent, setState);
  setInterval(() => mark("self", "peers"), 5000); // clocks tick (uptime, "since"); no fetch
}

window.peerdDashboard = { state, counters };
start();
