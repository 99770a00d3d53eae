// What the status page shows: one line per fact, from chrome.storage.local alone.
// Never the token or the enrol secret (neither is in what this reads but the credentials, whose
// token is left out here).

import { KEYS } from "./agent.js";
import { META } from "./spool.js";

export const STATUS_KEYS = [KEYS.identity, KEYS.creds, KEYS.send, KEYS.config, KEYS.errors, META];

function when(ms, now) {
  if (ms === null || ms === undefined) return "never";
  const ago = Math.round((now - ms) / 1000);
  const rel = ago >= 0 ? `${ago} s ago` : `in ${-ago} s`;
  return `${new Date(ms).toISOString()} (${rel})`;
}

/** [[label, text], ...] for the items read from chrome.storage.local at time `now` (ms). */
export function describe(items, now) {
  const rows = [];
  const id = items[KEYS.identity];
  rows.push(["device", id ? `${id.serial || "(not measured)"} — ${id.reason}` : "starting"]);
  const creds = items[KEYS.creds];
  rows.push(["enrolled", creds ? `device ${creds.device_id}, school ${creds.school}, at ${creds.server}` : "not yet"]);
  const cfg = items[KEYS.config];
  if (cfg) {
    rows.push(["collector", cfg.collector_url || "(no collector_url set)"]);
    rows.push(["intervals", `report every ${cfg.report_interval_s} s, idle after ${cfg.idle_detection_s} s`]);
  }
  const st = items[KEYS.send];
  if (st) {
    rows.push(["last success", when(st.last_success_at, now)]);
    rows.push(["last attempt", when(st.last_attempt_at, now)]);
    if (st.attempt) rows.push(["failing", `${st.attempt} attempts in a row; next ${when(st.next_attempt_at, now)}`]);
    if (st.last_error) rows.push(["last error", st.last_error]);
    rows.push(["sent", `${st.batches_sent} batches, ${st.records_sent} records (${st.records_duplicate} duplicates, ${st.records_rejected} rejected)`]);
  }
  const spool = items[META];
  if (spool) {
    rows.push(["spool", `${spool.next - spool.head} waiting, ${spool.bytes} bytes (spool ${spool.id})`]);
    rows.push(["dropped", `${spool.dropped} (spool full or too old)`]);
    rows.push(["dead letters", `${spool.dead_letter}${spool.last_dead_letter ? `: ${spool.last_dead_letter}` : ""}`]);
  }
  for (const e of items[KEYS.errors] ?? []) rows.push(["setting error", e]);
  return rows;
}
