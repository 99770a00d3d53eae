// The spool in chrome.storage.local: delivery keys, bounds with counted drops, settling, crash safety.

import assert from "node:assert/strict";
import test from "node:test";

import { META, Spool } from "../src/lib/spool.js";
import { FakeBrowser, QUOTA_BYTES, T0 } from "./support/browser.js";

const quiet = { info() {}, warn() {}, error() {} };

/** A browser whose worker runs nothing: the test drives the spool through the worker's storage. */
function storage() {
  const browser = new FakeBrowser({ entry: () => ({ settled: async () => {} }) });
  return { browser, area: () => browser.ensureWorker().chrome.storage.local };
}

const rec = (i) => ({ type: "usage", at: new Date(T0 + i * 60000).toISOString(), duration_s: 60, active_s: 60,
  idle_s: 0, locked_s: 0, source: "chrome" });
const big = { maxBytes: 8 * 1024 * 1024, maxAgeMs: 90 * 86400000, log: quiet };

test("seqs count up from 1 and are never given again, across worker restarts; the spool id stays", async () => {
  const { browser, area } = storage();
  let spool = await Spool.open(area(), big);
  const id = spool.id;
  assert.deepEqual(await spool.add([rec(1), rec(2)], T0), [1, 2]);
  const batch = await spool.take(10, 1e6);
  await spool.ack(batch);
  browser.kill();
  spool = await Spool.open(area(), big);
  assert.equal(spool.id, id);
  assert.deepEqual(await spool.add([rec(3)], T0), [3]);
  assert.equal(spool.depth, 1);
  assert.notEqual((await Spool.open(storage().area(), big)).id, id, "a new profile gets a new spool id");
});

test("over its byte bound the spool drops the oldest and counts them", async () => {
  const { browser, area } = storage();
  const spool = await Spool.open(area(), { ...big, maxBytes: 20000 });
  for (let i = 1; i <= 300; i++) await spool.add([rec(i)], T0);
  assert.ok(spool.meta.bytes <= 20000, `${spool.meta.bytes} bytes`);
  assert.equal(spool.dropped + spool.depth, 300);
  assert.ok(spool.dropped > 150);
  const batch = await spool.take(1000, 1e9);
  assert.deepEqual(batch.records.map((r) => r.seq), Array.from({ length: spool.depth }, (_, i) => spool.dropped + 1 + i),
    "what is left is the newest, in order");
  // The counted bytes are what Chrome counts against its quota.
  const got = await area().get(null);
  const records = Object.entries(got).filter(([k]) => k.startsWith("r:"));
  assert.equal(records.length, spool.depth);
  assert.equal(records.reduce((n, [k, v]) => n + k.length + JSON.stringify(v).length, 0), spool.meta.bytes);
  assert.equal(browser.read(META).dropped, spool.dropped, "the count is stored, not only in memory");
});

test("records older than the age bound are dropped and counted", async () => {
  const { area } = storage();
  const spool = await Spool.open(area(), { ...big, maxAgeMs: 3600000 });
  await spool.add([rec(1), rec(2)], T0);
  await spool.add([rec(3)], T0 + 1800000);
  assert.equal(await spool.enforce(T0 + 3600001), 2);
  assert.deepEqual([spool.dropped, spool.depth], [2, 1]);
});

test("a batch in flight is never dropped: the bound waits until it is settled", async () => {
  const { area } = storage();
  const spool = await Spool.open(area(), { ...big, maxBytes: 5000 });
  for (let i = 1; i <= 10; i++) await spool.add([rec(i)], T0);
  const batch = await spool.take(5, 1e9);
  for (let i = 11; i <= 40; i++) await spool.add([rec(i)], T0);
  assert.equal(spool.dropped, 0, "nothing dropped while a batch is out");
  await spool.ack(batch);
  await spool.enforce(T0);
  assert.ok(spool.meta.bytes <= 5000);
  assert.equal(5 + spool.dropped + spool.depth, 40, "sent + dropped + waiting = all");
  assert.equal(spool.meta.head, 6 + spool.dropped);
});

test("take: oldest first, at most maxRecords and maxBytes, at least one; release gives them back", async () => {
  const { area } = storage();
  const spool = await Spool.open(area(), big);
  for (let i = 1; i <= 10; i++) await spool.add([rec(i)], T0);
  const size = JSON.stringify({ ...rec(1), seq: 1 }).length;
  let batch = await spool.take(4, 1e9);
  assert.deepEqual(batch.records.map((r) => r.seq), [1, 2, 3, 4]);
  await assert.rejects(spool.take(4, 1e9), /already in flight/);
  spool.release(batch);
  batch = await spool.take(100, size * 2 + 5);
  assert.deepEqual(batch.records.map((r) => r.seq), [1, 2]);
  spool.release(batch);
  batch = await spool.take(100, 1);
  assert.deepEqual(batch.records.map((r) => r.seq), [1]);
});

test("a dead-lettered batch is removed and counted with its reason", async () => {
  const { area } = storage();
  const spool = await Spool.open(area(), big);
  await spool.add([rec(1), rec(2), rec(3)], T0);
  const batch = await spool.take(2, 1e9);
  assert.equal(await spool.deadLetter(batch, "HTTP 400 invalid: $.records[0]"), 2);
  assert.deepEqual([spool.meta.dead_letter, spool.meta.last_dead_letter, spool.depth], [2, "HTTP 400 invalid: $.records[0]", 1]);
  assert.equal(spool.dropped, 0);
});

test("a worker stopped between cutting a batch and removing its keys leaves garbage that the next open removes", async () => {
  const { browser, area } = storage();
  let spool = await Spool.open(area(), big);
  await spool.add([rec(1), rec(2), rec(3)], T0);
  const before = browser.bytesInUse();
  const batch = await spool.take(2, 1e9);
  browser.killAtStorageOp = browser.storageOps + 2; // the set of meta passes, the remove never happens
  spool.ack(batch);
  await new Promise((r) => setImmediate(r));
  assert.equal(browser.worker, null);
  assert.ok(browser.local.has("r:1") && browser.read(META).head === 3, "cut off, keys still there");
  browser.killAtStorageOp = null;
  spool = await Spool.open(area(), big);
  assert.ok(!browser.local.has("r:1") && !browser.local.has("r:2") && browser.local.has("r:3"));
  assert.ok(browser.bytesInUse() < before);
  assert.equal(spool.depth, 1);
  assert.deepEqual((await spool.take(9, 1e9)).records.map((r) => r.seq), [3]);
});

test("when other data fills the storage quota, room is made from the oldest records, else the new ones are dropped, counted", async () => {
  const { browser, area } = storage();
  const spool = await Spool.open(area(), big);
  for (let i = 1; i <= 20; i++) await spool.add([rec(i)], T0);
  // Another key (in a real profile: anything else stored) leaves room for about one record.
  const room = QUOTA_BYTES - browser.bytesInUse() - 250;
  await area().set({ other: "x".repeat(room - 10) });
  await spool.add([rec(21)], T0);
  await spool.add([rec(22)], T0);
  assert.ok(spool.dropped >= 1, "the oldest made room");
  assert.ok(browser.bytesInUse() <= QUOTA_BYTES);
  // Nothing left to drop while a batch is out: the new record is lost, and counted.
  const batch = await spool.take(1000, 1e9);
  const dropped = spool.dropped;
  await area().set({ other: "x".repeat(QUOTA_BYTES - browser.bytesInUse() + browser.read("other").length - 20) });
  assert.deepEqual(await spool.add([rec(23)], T0, { tally: { start: 1 } }), []);
  assert.equal(spool.dropped, dropped + 1);
  assert.deepEqual(browser.read("tally"), { start: 1 }, "the tally still moves on");
  spool.release(batch);
});
