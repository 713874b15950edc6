/* ABAXUS console: live tiles, charts (uPlot, vendored), and the events behind an invoice
   line with their checksum recomputed in the page. No inline script (strict CSP). */
"use strict";

function liveTiles() {
  const live = document.getElementById("live");
  if (!live) return;
  const text = document.getElementById("live-text");
  async function refresh() {
    try {
      const response = await fetch(live.dataset.source, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      for (const tile of data.tiles) {
        const box = document.querySelector(`[data-tile="${tile.key}"]`);
        if (!box) continue;
        box.querySelector('[data-field="value"]').textContent = tile.value;
        const change = box.querySelector('[data-field="change"]');
        change.textContent = tile.change;
        change.className = `change ${tile.direction}`;
        box.querySelector('[data-field="previous"]').textContent = `previous: ${tile.previous}`;
      }
      live.classList.remove("offline");
      text.textContent = `Live · as of ${data.as_of_clock}`;
    } catch (error) {
      live.classList.add("offline");
      text.textContent = "Offline — retrying";
    }
  }
  setInterval(refresh, 5000);
}

function charts() {
  const holder = document.getElementById("chart-data");
  if (!holder || typeof uPlot === "undefined") return;
  const data = JSON.parse(holder.textContent);
  for (const [id, series, label] of [["events-chart", data.events, "events"], ["revenue-chart", data.revenue, "revenue"]]) {
    const target = document.getElementById(id);
    if (!target) continue;
    if (!series.days.length) { target.textContent = "Nothing yet in this window."; continue; }
    const width = Math.max(280, target.clientWidth || 480);
    const day = 86400;
    new uPlot({
      width, height: 220,
      series: [{}, { label, stroke: "#2454c5", fill: "rgba(36,84,197,0.35)", width: 1,
                     paths: uPlot.paths.bars({ size: [0.7, 40] }), points: { show: false } }],
      axes: [{ space: 60 }, { size: 60 }],
      scales: { x: { time: true, range: (u, min, max) => [min - day / 2, max + day / 2] },
                y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
    }, [series.days, series.values], target);
  }
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer)).map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(text) {
  return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/* docs/concepts.md, "The checksum of an exact summary". */
async function usageChecksum(events) {
  const modulus = 1n << 256n;
  const byVersion = new Map();
  for (const event of events) {
    const digest = BigInt("0x" + await sha256(`${event.idempotency_key}\t${event.timestamp}\t${event.value}\n`));
    const slot = byVersion.get(event.meter_version) || { count: 0, sum: 0n };
    slot.count += 1;
    slot.sum = (slot.sum + digest) % modulus;
    byVersion.set(event.meter_version, slot);
  }
  const lines = [...byVersion.keys()].sort((a, b) => a - b)
    .map((v) => `${v}\t${byVersion.get(v).count}\t${byVersion.get(v).sum.toString(16).padStart(64, "0")}\n`);
  return "sha256:" + await sha256(lines.join(""));
}

function lineEvents() {
  for (const details of document.querySelectorAll("details.events")) {
    details.addEventListener("toggle", async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = "1";
      const verdict = details.querySelector(".verify");
      const body = details.querySelector("tbody");
      try {
        const response = await fetch(details.dataset.eventsUrl, { credentials: "same-origin" });
        const data = await response.json();
        for (const event of data.events) {
          const row = body.insertRow();
          for (const value of [event.idempotency_key, event.timestamp, event.value, `v${event.meter_version}`]) {
            const cell = row.insertCell();
            cell.textContent = value;
          }
          row.cells[2].className = "n";
        }
        if (data.truncated) {
          verdict.textContent = `${data.events.length} of ${data.total} events shown; recompute the checksum of all of them with tools/usage_checksum.py.`;
          return;
        }
        if (!window.crypto || !crypto.subtle) {
          verdict.textContent = "This page is not served over a secure origin: recompute with tools/usage_checksum.py.";
          return;
        }
        const recomputed = await usageChecksum(data.events);
        const same = recomputed === details.dataset.checksum && data.events.length === Number(details.dataset.eventCount);
        verdict.className = `verify ${same ? "ok" : "bad"}`;
        const more = data.events.length - Number(details.dataset.eventCount);
        verdict.textContent = same
          ? `✓ ${data.events.length} events; checksum recomputed in this page: ${recomputed}`
          : more > 0
            ? `✗ ${more} more events are stored in this period than the line counted: events committed after the invoice was priced (late usage: adjustments bill them). Recomputed ${recomputed}, the line says ${details.dataset.checksum}.`
            : `✗ recomputed ${recomputed} over ${data.events.length} events, the line says ${details.dataset.checksum}`;
        verdict.dataset.recomputed = recomputed;
      } catch (error) {
        verdict.textContent = `Could not load the events: ${error}`;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => { liveTiles(); charts(); lineEvents(); });

// The regions page of a central: reload while open, so regions are seen converging.
(() => {
  const table = document.querySelector("table[data-refresh-seconds]");
  if (table) setTimeout(() => location.reload(), 1000 * Number(table.dataset.refreshSeconds));
})();
