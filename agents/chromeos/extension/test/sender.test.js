// The retry rule and the HTTP calls, against a loopback collector.

import assert from "node:assert/strict";
import test from "node:test";

import * as net from "../src/lib/sender.js";
import { FakeCollector, SECRET } from "./support/collector.js";
import { seeded } from "./support/browser.js";

const NOW = Date.UTC(2026, 10, 30, 8, 0, 0);

test("Retry-After: delay-seconds and HTTP-dates, capped; anything else is ignored", () => {
  assert.equal(net.parseRetryAfter("120", NOW), 120);
  assert.equal(net.parseRetryAfter(" 0 ", NOW), 0);
  assert.equal(net.parseRetryAfter(new Date(NOW + 90000).toUTCString(), NOW), 90);
  assert.equal(net.parseRetryAfter(new Date(NOW - 90000).toUTCString(), NOW), 0);
  assert.equal(net.parseRetryAfter("99999999", NOW), net.MAX_RETRY_AFTER_S);
  assert.equal(net.parseRetryAfter("soon", NOW), null);
  assert.equal(net.parseRetryAfter("1.5", NOW), null);
  assert.equal(net.parseRetryAfter("-3", NOW), null);
  assert.equal(net.parseRetryAfter(null, NOW), null);
});

test("backoff: full jitter under min(900 s, 30 s * 2^attempt), never under Retry-After", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 10, 5000].map((n) => net.ceiling(n)), [30, 60, 120, 240, 480, 900, 900, 900]);
  const random = seeded(7);
  for (let attempt = 0; attempt < 12; attempt++) {
    const delays = Array.from({ length: 200 }, () => net.backoffDelay(attempt, random));
    assert.ok(delays.every((d) => d >= 0 && d <= net.ceiling(attempt)), `attempt ${attempt}`);
    assert.ok(Math.max(...delays) > net.ceiling(attempt) / 2, "jitter spreads over the whole range");
  }
  assert.equal(net.backoffDelay(0, () => 0.99, 600), 600);
  assert.equal(net.backoffDelay(5, () => 1, 60), 900);
});

test("what each status means for a batch", () => {
  const expect = { 200: "sent", 400: "dead_letter", 403: "dead_letter", 413: "dead_letter", 401: "reenrol",
    408: "retry", 429: "retry", 500: "retry", 502: "retry", 503: "retry", 504: "retry", 404: "retry", 301: "retry",
    415: "retry" };
  for (const [status, kind] of Object.entries(expect)) assert.equal(net.classify(Number(status)), kind, status);
});

test("problem bodies become one line naming the code and the detail", () => {
  assert.equal(net.problem(400, '{"error": "invalid", "detail": "Expected `float`, got `str` - at `$.records[0].active_s`"}'),
    "HTTP 400 invalid: Expected `float`, got `str` - at `$.records[0].active_s`");
  assert.equal(net.problem(502, "<html>Bad gateway</html>"), "HTTP 502: <html>Bad gateway</html>");
  assert.equal(net.problem(503, ""), "HTTP 503");
});

test("enrolment sends the serial as a chromebook and returns the token; a refusal is an EnrollError with its status", async (t) => {
  const collector = await new FakeCollector().start();
  t.after(() => collector.close());
  const res = await net.enroll(fetch, collector.url, { secret: SECRET, serial: "5CD1234XYZ" });
  assert.equal(collector.devices.get("5CD1234XYZ").kind, "chromebook");
  assert.equal(collector.tokens.get(res.token), res.device_id);
  await assert.rejects(net.enroll(fetch, collector.url, { secret: "wrong-secret", serial: "5CD1234XYZ" }),
    (e) => e instanceof net.EnrollError && e.status === 401 && /invalid_secret/.test(e.message));
  await assert.rejects(net.enroll(fetch, "http://127.0.0.1:9", { secret: SECRET, serial: "X" }),
    (e) => e instanceof net.EnrollError && e.status === null && /cannot reach/.test(e.message));
  assert.deepEqual(collector.invalid, []);
});

test("a batch of 1 KiB or more is gzip-compressed; a small one is not", async (t) => {
  const collector = await new FakeCollector().start();
  t.after(() => collector.close());
  const { device_id, token } = await net.enroll(fetch, collector.url, { secret: SECRET, serial: "5CD1234XYZ" });
  const rec = (seq) => ({ type: "usage", seq, at: new Date(NOW + seq * 60000).toISOString(), duration_s: 60,
    active_s: 60, idle_s: 0, locked_s: 0, source: "chrome" });
  const batch = (n) => ({ device_id, spool: crypto.randomUUID(), sent_at: new Date(NOW).toISOString(),
    records: Array.from({ length: n }, (_, i) => rec(i + 1)), dropped: 0, agent_version: "tice-chrome/0.1.0" });
  assert.equal((await net.postBatch(fetch, collector.url, token, batch(1))).status, 200);
  assert.equal((await net.postBatch(fetch, collector.url, token, batch(20))).status, 200);
  const [small, big] = collector.requests.filter((r) => r.path === "/api/v1/reports");
  assert.equal(small.headers["content-encoding"], undefined);
  assert.equal(big.headers["content-encoding"], "gzip");
  assert.equal(collector.stored.size, 21);
  assert.deepEqual(collector.invalid, []);
});
