// The in-memory Chrome itself: the limits the other tests rely on are really enforced.

import assert from "node:assert/strict";
import test from "node:test";

import { FakeBrowser, matches, QUOTA_BYTES, T0 } from "./support/browser.js";

const inert = () => ({ settled: async () => {} });

test("alarms: under 30 s is raised to 30 s with a warning; at most 500; they survive a worker restart", async () => {
  const browser = new FakeBrowser({ entry: inert });
  const { alarms } = browser.ensureWorker().chrome;
  await alarms.create("a", { periodInMinutes: 0.25 });
  await alarms.create("b", { when: T0 + 5000 });
  assert.deepEqual(await alarms.get("a"), { name: "a", scheduledTime: T0 + 30000, periodInMinutes: 0.5 });
  assert.equal((await alarms.get("b")).scheduledTime, T0 + 30000);
  assert.equal(browser.warnings.length, 2);
  for (let i = 0; i < 498; i++) await alarms.create(`n${i}`, { delayInMinutes: 1 });
  await assert.rejects(alarms.create("one-too-many", { delayInMinutes: 1 }), /too many alarms/);
  browser.kill();
  assert.equal((await browser.ensureWorker().chrome.alarms.getAll()).length, 500);
});

test("storage.local: a set over the 10 MB quota fails whole; several keys are set together or not at all", async () => {
  const browser = new FakeBrowser({ entry: inert });
  const { local } = browser.ensureWorker().chrome.storage;
  await local.set({ a: "x".repeat(QUOTA_BYTES - 100) });
  await assert.rejects(local.set({ b: 1, c: "y".repeat(200) }), /QUOTA_BYTES quota exceeded/);
  assert.deepEqual(await local.get(["b", "c"]), {});
  assert.ok(browser.bytesInUse() <= QUOTA_BYTES);
});

test("storage.managed is read-only; idle refuses detection intervals under 15 s", async () => {
  const browser = new FakeBrowser({ entry: inert, policy: { collector_url: "https://x.example" } });
  const chrome = browser.ensureWorker().chrome;
  await assert.rejects(chrome.storage.managed.set({ a: 1 }), /read-only/);
  assert.deepEqual(await chrome.storage.managed.get(null), { collector_url: "https://x.example" });
  assert.throws(() => chrome.idle.setDetectionInterval(14), /at least 15/);
  await assert.rejects(chrome.idle.queryState(10), /at least 15/);
});

test("a stopped worker keeps nothing but storage and alarms, and its pending calls never return", async () => {
  const browser = new FakeBrowser({ entry: inert });
  const old = browser.ensureWorker();
  old.chrome.idle.setDetectionInterval(120);
  old.chrome.idle.onStateChanged.addListener(() => {});
  await old.chrome.storage.local.set({ kept: 1 });
  browser.kill();
  let settled = false;
  old.chrome.storage.local.get("kept").then(() => {
    settled = true;
  });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(settled, false);
  const fresh = browser.ensureWorker();
  assert.equal(fresh.detectionInterval, 60);
  assert.equal(fresh.events.idle.listeners.length, 0);
  assert.deepEqual(await fresh.chrome.storage.local.get("kept"), { kept: 1 });
});

test("the worker stops after 30 s without events, and an event starts a new one", async () => {
  const browser = new FakeBrowser({ entry: inert });
  browser.ensureWorker();
  await browser.advance(29999);
  assert.ok(browser.worker);
  await browser.advance(1);
  assert.equal(browser.worker, null);
  browser.dispatch("idle", "idle");
  assert.ok(browser.worker);
  assert.equal(browser.restarts, 1);
});

test("host permission patterns: one host, any port; no other host", () => {
  assert.ok(matches("http://127.0.0.1/*", "http://127.0.0.1:8099/api/v1/reports"));
  assert.ok(matches("https://tice.example.org/*", "https://tice.example.org/x"));
  assert.ok(matches("https://*.example.org/*", "https://tice.example.org/x"));
  assert.ok(!matches("https://tice.example.org/*", "http://tice.example.org/x"));
  assert.ok(!matches("https://tice.example.org/*", "https://evil.example.org/x"));
});
