// Active time measured by the running extension, through worker restarts and sleeps.

import assert from "node:assert/strict";
import test from "node:test";

import { KEYS } from "../src/lib/agent.js";
import { T0 } from "./support/browser.js";
import { clean, install, scenario } from "./support/setup.js";

const S = 1000;
const split = (r) => [r.at, r.duration_s, r.active_s, r.idle_s, r.locked_s];

test("idle events split each interval into active, idle and locked seconds, whatever worker sees them", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser); // 08:00:00, active
  const at = async (s, state) => {
    await browser.advance(T0 + s * S - browser.clock);
    browser.kill(); // each event wakes a new worker
    await browser.setIdle(state);
  };
  await at(20, "idle");
  await at(45, "locked");
  // the tick at 60 s cuts the first interval; Chrome still says "locked"
  await at(70, "active");
  await at(150, "idle");
  await browser.advance(T0 + 180 * S - browser.clock);
  assert.deepEqual(collector.records().map(split), [
    ["2026-11-30T08:00:00.000Z", 60, 20, 25, 15],
    ["2026-11-30T08:01:00.000Z", 60, 50, 0, 10],
    ["2026-11-30T08:02:00.000Z", 60, 30, 30, 0],
  ]);
  assert.ok(collector.records().every((r) => r.source === "chrome" && r.type === "usage"));
  clean(browser, collector);
});

test("a state change Chrome did not report is taken from queryState at the next tick", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  browser.idleState = "locked"; // no event delivered
  await browser.advance(120 * S);
  assert.deepEqual(collector.records().map(split), [
    ["2026-11-30T08:00:00.000Z", 60, 60, 0, 0],
    ["2026-11-30T08:01:00.000Z", 60, 0, 0, 60],
  ]);
  clean(browser, collector);
});

test("time the device sleeps is not counted; the interval before it ends at the last observation", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  await browser.advance(60 * S + 20 * S);
  await browser.setIdle("idle"); // 08:01:20
  await browser.suspend(10 * 60 * S); // lid closed until 08:11:20; the overdue tick fires on wake
  await browser.advance(60 * S);
  assert.deepEqual(collector.records().map(split), [
    ["2026-11-30T08:00:00.000Z", 60, 60, 0, 0],
    ["2026-11-30T08:01:00.000Z", 20, 20, 0, 0],
    ["2026-11-30T08:11:20.000Z", 60, 0, 60, 0],
  ]);
  const total = collector.records().reduce((n, r) => n + r.duration_s, 0);
  assert.equal(total, 140, "of 12 min 20 s, only the 140 s observed");
  clean(browser, collector);
});

test("a browser closed overnight: the next day starts a new interval, nothing counted in between", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  await browser.advance(3 * 60 * S);
  browser.restartBrowser();
  browser.clock += 15 * 3600 * S;
  browser.dispatch("startup");
  await browser.settle();
  await browser.advance(60 * S);
  const records = collector.records();
  assert.equal(records.length, 4);
  assert.equal(records[3].at, "2026-11-30T23:03:00.000Z");
  assert.equal(records.reduce((n, r) => n + r.duration_s, 0), 240);
  assert.ok(browser.read(KEYS.tally).start > T0 + 15 * 3600 * S);
  clean(browser, collector);
});
