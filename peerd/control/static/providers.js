// One panel per running provider, built from what the provider reports.
// Any provider gets the generic panel (its status as facts); providers with
// more to show register a detail renderer here. New providers (a DHT,
// compute jobs) appear without any change to the page.

import { api } from "./api.js";
import { clear, fmtBytes, fmtDuration, fmtRate, h, shortId } from "./dom.js";
import { state } from "./state.js";

// Providers the files panels (transfers, shares) already cover.
const COVERED = new Set(["files"]);

// Detail sources: provider -> API path of a richer status, refetched on its events.
export const DETAIL_ROUTES = {
  relay: "providers/relay/status",
  storage: "providers/storage/status",
};

export async function fetchDetail(name) {
  const route = DETAIL_ROUTES[name];
  if (!route) return;
  try {
    const detail = await api.get(route);
    if (name === "storage") {
      try {
        detail.jobs = (await api.get("providers/storage/jobs")).jobs || [];
      } catch (e) {
        detail.jobs = [];
      }
    }
    state.providerDetails.set(name, detail);
  } catch (e) {
    state.providerDetails.set(name, { error: e.message });
  }
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

function scalarFacts(status) {
  const items = [];
  for (const [key, value] of Object.entries(status || {})) {
    if (value === null || typeof value !== "object") items.push(fact(key.replaceAll("_", " "), String(value)));
    else if (Array.isArray(value)) items.push(fact(key.replaceAll("_", " "), `${value.length}`));
  }
  return items;
}

function meter(used, total) {
  const bar = h("div", { class: "bar" });
  bar.style.width = `${total ? Math.min(100, (100 * used) / total).toFixed(1) : 0}%`;
  return h("div", { class: "progress" }, bar);
}

const DETAILS = {
  storage(detail) {
    const jobs = detail.jobs || [];
    return [
      h("p", {}, `${fmtBytes(detail.used)} used of ${fmtBytes(detail.quota)} quota`),
      meter(detail.used, detail.quota),
      h("dl", { class: "facts" },
        fact("shares held", String(detail.shares)),
        fact("lease owners", String(Object.keys(detail.owners || {}).length)),
        fact("corrupt found", String(detail.corrupt_found)),
        fact("storage peers", String(detail.storage_peers))),
      h("h3", {}, "Jobs"),
      jobs.length
        ? h("table", {}, h("tbody", {}, jobs.slice(-20).reverse().map((j) =>
          h("tr", {}, h("td", {}, j.kind), h("td", {}, j.state), h("td", {}, j.detail || ""),
            h("td", { class: "num" }, `${fmtBytes(j.bytes_done || 0)} of ${fmtBytes(j.size || 0)}`),
            h("td", { class: "error" }, j.error || "")))))
        : h("p", { class: "empty" }, "no stores, retrieves or repairs yet"),
    ];
  },
  relay(detail) {
    const m = detail.monthly || {};
    const limits = detail.limits || {};
    return [
      h("dl", { class: "facts" },
        fact("serving", String(detail.serving)),
        fact("reserving", String(detail.reserving)),
        fact("reservations", `${(detail.reservations || []).length} of ${limits.max_reservations ?? "?"}`),
        fact("circuits", `${(detail.circuits || []).length} of ${limits.max_circuits ?? "?"}`),
        fact("rate limit", limits.rate ? fmtRate(limits.rate) : "unlimited"),
        fact("this month", `${fmtBytes(m.bytes || 0)}${m.limit ? ` of ${fmtBytes(m.limit)}` : ""}`),
        fact("relayed via", (detail.relayed_via || []).map((r) => shortId(r.relay)).join(", ") || "-")),
      (detail.circuits || []).length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["From", "To", "Age", "Bytes", "Rate"].map((t) => h("th", {}, t)))),
          h("tbody", {}, detail.circuits.map((c) => h("tr", {},
            h("td", { class: "mono", title: c.src }, shortId(c.src)),
            h("td", { class: "mono", title: c.dst }, shortId(c.dst)),
            h("td", {}, fmtDuration(c.age)),
            h("td", { class: "num" }, fmtBytes(c.bytes_forward + c.bytes_backward)),
            h("td", { class: "num" }, fmtRate(c.rate_forward + c.rate_backward))))))
        : h("p", { class: "empty" }, "no circuits"),
    ];
  },
};

const panels = new Map();

export function renderProviders() {
  const root = document.getElementById("provider-panels");
  const providers = (state.status && state.status.providers) || {};
  for (const [name, panel] of panels) {
    if (!(name in providers)) {
      panel.remove();
      panels.delete(name);
    }
  }
  for (const name of Object.keys(providers).sort()) {
    if (COVERED.has(name)) continue;
    let panel = panels.get(name);
    if (!panel) {
      panel = h("section", { class: "panel", id: `panel-provider-${name}`, dataset: { provider: name } });
      panels.set(name, panel);
      root.append(panel);
    }
    clear(panel);
    const info = providers[name];
    panel.append(h("h2", {}, `${name} `, h("span", { class: "count" }, `v${info.version}`)));
    const detail = state.providerDetails.get(name);
    if (detail && !detail.error && DETAILS[name]) panel.append(...DETAILS[name](detail));
    else panel.append(h("dl", { class: "facts" }, scalarFacts(info.status)));
    if (detail && detail.error) panel.append(h("p", { class: "error" }, detail.error));
  }
}
