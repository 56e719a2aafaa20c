// The shares table.

import { api } from "./api.js";
import { clear, fmtBytes, h } from "./dom.js";
import { state } from "./state.js";

export function renderShares() {
  const tbody = document.querySelector("#shares tbody");
  clear(tbody);
  if (!state.shares.length) {
    tbody.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "nothing shared")));
    return;
  }
  for (const share of state.shares) {
    const out = h("span", { class: "error" });
    const stop = h("button", { type: "button" }, "Stop sharing");
    stop.addEventListener("click", async () => {
      try {
        await api.del(`providers/files/shares/${encodeURIComponent(share.cid)}`);
      } catch (e) {
        out.textContent = e.message;
      }
    });
    tbody.append(h("tr", { dataset: { cid: share.cid } },
      h("td", { class: "name", title: share.path }, share.name),
      h("td", { class: "mono cid" }, share.cid),
      h("td", { class: "num" }, fmtBytes(share.size)),
      h("td", {}, share.status),
      h("td", {}, stop, out)));
  }
}
