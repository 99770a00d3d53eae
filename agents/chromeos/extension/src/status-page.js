import { describe, STATUS_KEYS } from "./lib/status.js";

async function show() {
  const rows = describe(await chrome.storage.local.get(STATUS_KEYS), Date.now());
  const table = document.getElementById("status");
  table.replaceChildren(...rows.map(([label, text]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.textContent = label;
    td.textContent = text;
    tr.append(th, td);
    return tr;
  }));
}

show();
setInterval(show, 5000);
