// The control API over fetch, and the event stream.
// State-changing requests send JSON (the server refuses anything else) from
// this page's own origin, with the session cookie.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

const PREFIX = "/api/v1/";

async function request(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(PREFIX + path, init);
  } catch (e) {
    throw new ApiError(`peerd is not answering (${e.message})`, 0);
  }
  let value = null;
  const text = await response.text();
  try {
    value = text ? JSON.parse(text) : null;
  } catch (e) {
    value = null;
  }
  if (!response.ok) {
    const message = value && typeof value.error === "string" ? value.error : `HTTP ${response.status}`;
    throw new ApiError(message, response.status);
  }
  return value;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body || {}),
  del: (path) => request("DELETE", path),
};

/**
 * Follows /api/v1/events. onEvent(data) gets each event (data.type says
 * which); onState(state) gets "live", "reconnecting" or "closed", and a
 * "stream.gap" event means events were missed: refresh the snapshots.
 * EventSource reconnects by itself and resumes with Last-Event-ID.
 */
export function followEvents(onEvent, onState) {
  const source = new EventSource(PREFIX + "events");
  source.onopen = () => onState("live");
  source.onerror = () => onState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  source.onmessage = (message) => {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    onEvent(data);
  };
  return source;
}
