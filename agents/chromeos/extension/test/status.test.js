// The status page's text, from what a running extension stored.

import assert from "node:assert/strict";
import test from "node:test";

import { describe, STATUS_KEYS } from "../src/lib/status.js";
import { SECRET } from "./support/collector.js";
import { clean, install, scenario } from "./support/setup.js";

test("the status page says who the device is, where it sends, how delivery goes; never the token or secret", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  await browser.advance(60000);
  collector.failWith = { status: 503, error: "unavailable", detail: "database down" };
  await browser.advance(60000);
  const items = await browser.ensureWorker().chrome.storage.local.get(STATUS_KEYS);
  const rows = Object.fromEntries(describe(items, browser.clock));
  const creds = browser.read("creds");
  assert.equal(rows.device, "5CD1234XYZ — managed ChromeOS device (serial from chrome.enterprise.deviceAttributes)");
  assert.equal(rows.enrolled, `device ${creds.device_id}, school 0210001A, at ${collector.url}`);
  assert.equal(rows.collector, collector.url);
  assert.equal(rows["last success"], "2026-11-30T08:01:00.000Z (60 s ago)");
  assert.match(rows.failing, /^1 attempts in a row; next 2026-11-30T08:02:\d\d\.\d{3}Z \(in \d+ s\)$/);
  assert.equal(rows["last error"], "HTTP 503 unavailable: database down");
  assert.equal(rows.sent, "1 batches, 1 records (0 duplicates, 0 rejected)");
  assert.match(rows.spool, /^1 waiting, \d+ bytes \(spool [0-9a-f-]{36}\)$/);
  assert.equal(rows.dropped, "0 (spool full or too old)");
  const text = JSON.stringify(rows);
  assert.ok(!text.includes(creds.token) && !text.includes(SECRET));
  clean(browser, collector);
});

test("a fresh profile, before anything is stored, shows that it is starting", () => {
  assert.deepEqual(describe({}, 0), [["device", "starting"], ["enrolled", "not yet"]]);
});
