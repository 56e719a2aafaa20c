// What the page knows. Filled from the API at load (and after a gap in the
// event stream), then kept current by events.

export const state = {
  status: null, // GET status, refreshed by stats.tick
  statusAt: 0, // Date.now() when status arrived (uptime keeps counting)
  peers: new Map(), // peer_id -> GET peers entry
  downloads: new Map(), // cid -> download status
  pieces: new Map(), // cid -> {blocks, sources, map}
  shares: [],
  providerDetails: new Map(), // provider name -> its detailed status (relay, storage)
  events: [], // newest last, bounded
};

export const MAX_EVENTS = 200;

export function rememberEvent(event) {
  state.events.push(event);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
}
