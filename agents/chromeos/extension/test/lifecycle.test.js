// Install, identity, listeners, alarms, configuration: the worker's life as Chrome runs it.

import assert from "node:assert/strict";
import test from "node:test";

import { KEYS, RETRY, TICK } from "../src/lib/agent.js";
import { FakeBrowser, manifest, T0 } from "./support/browser.js";
import { FakeCollector, SECRET } from "./support/collector.js";
import { clean, enrolments, eventually, install, LOOPBACK_HOSTS, reports, scenario } from "./support/setup.js";

test("at install the device enrols with its serial as a chromebook and keeps its token", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  const [enrol] = enrolments(collector);
  assert.deepEqual(enrol.body, { secret: SECRET, serial: "5CD1234XYZ", kind: "chromebook" });
  const creds = browser.read(KEYS.creds);
  assert.equal(collector.tokens.get(creds.token), creds.device_id);
  assert.equal(creds.serial, "5CD1234XYZ");
  assert.deepEqual(browser.read(KEYS.identity), { serial: "5CD1234XYZ", source: "serial", managed: true,
    reason: "managed ChromeOS device (serial from chrome.enterprise.deviceAttributes)" });
  await browser.advance(60000);
  assert.equal(reports(collector)[0].body.device_id, creds.device_id);
  assert.equal(enrolments(collector).length, 1, "enrolled once");
  clean(browser, collector);
});

test("device_identity asset_id enrols with the Admin console's asset id", async (t) => {
  const { collector, browser } = await scenario(t, { policy: { device_identity: "asset_id" } });
  await install(browser);
  assert.equal(enrolments(collector)[0].body.serial, "ECOLE-A-17");
  clean(browser, collector);
});

test("not a managed device: nothing is measured or sent, and the status says why and what to set", async (t) => {
  for (const enterprise of [null, { serial: "", assetId: "" }]) {
    const { collector, browser } = await scenario(t, { browser: { enterprise } });
    await install(browser);
    await browser.advance(5 * 60000);
    assert.equal(collector.requests.length, 0);
    assert.equal(browser.read("tally"), undefined);
    const id = browser.read(KEYS.identity);
    assert.equal(id.serial, "");
    assert.match(id.reason, enterprise ? /not affiliated/ : /not available \(not force-installed on a managed ChromeOS device\)/);
    assert.match(id.reason, /set unmanaged_device to "install_id"/);
    clean(browser, collector);
  }
});

test("unmanaged_device install_id: counted under a random id made once per profile", async (t) => {
  const { collector, browser } = await scenario(t, { policy: { unmanaged_device: "install_id" }, browser: { enterprise: null } });
  await install(browser);
  const serial = enrolments(collector)[0].body.serial;
  assert.match(serial, /^ext-[0-9a-f]{32}$/);
  browser.restartBrowser();
  browser.dispatch("startup");
  await browser.settle();
  await browser.advance(60000);
  assert.equal(browser.read(KEYS.identity).serial, serial, "the same id after a browser restart");
  assert.equal(enrolments(collector).length, 1);
  assert.equal(collector.stored.size, 1);
  clean(browser, collector);
});

test("sw.js registers every listener synchronously at its top level", async () => {
  const never = () => new Promise(() => {});
  const registered = [];
  const event = (name) => ({ addListener: () => registered.push(name) });
  // Every asynchronous call hangs: a listener added after any await would never be added.
  globalThis.chrome = {
    storage: { local: { get: never, set: never, remove: never }, managed: { get: never }, onChanged: event("storage.onChanged") },
    alarms: { get: never, create: never, clear: never, onAlarm: event("alarms.onAlarm") },
    idle: { queryState: never, setDetectionInterval() {}, onStateChanged: event("idle.onStateChanged") },
    runtime: { getURL: (p) => p, getManifest: () => manifest(), onStartup: event("runtime.onStartup"),
      onInstalled: event("runtime.onInstalled") },
    permissions: { contains: never },
  };
  try {
    await import("../src/sw.js");
  } finally {
    delete globalThis.chrome;
  }
  assert.deepEqual(registered.sort(), ["alarms.onAlarm", "idle.onStateChanged", "runtime.onInstalled",
    "runtime.onStartup", "storage.onChanged"]);
});

test("a new worker sets the idle detection interval again (Chrome forgets it) and keeps the tick's schedule", async (t) => {
  const { collector, browser } = await scenario(t, { policy: { idle_detection_s: 120 } });
  await install(browser);
  assert.equal(browser.worker.detectionInterval, 120);
  const scheduled = browser.alarms.get(TICK).scheduledTime;
  assert.equal(scheduled, T0 + 60000);
  assert.equal(browser.alarms.get(TICK).periodInMinutes, 1);
  browser.kill();
  browser.dispatch("idle", "idle"); // Chrome starts a worker for the event
  await browser.settle();
  assert.equal(browser.worker.detectionInterval, 120);
  assert.equal(browser.alarms.get(TICK).scheduledTime, scheduled, "re-creating the alarm would restart its period");
  await browser.advance(10 * 60000);
  assert.ok(browser.restarts >= 10, `the worker was stopped ${browser.restarts} times`);
  assert.equal(collector.stored.size, 10);
  clean(browser, collector);
});

test("after a browser restart that lost the alarms, the next worker makes the tick again", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  await browser.advance(60000);
  browser.restartBrowser();
  assert.equal(browser.alarms.size, 0);
  browser.dispatch("startup");
  await browser.settle();
  assert.deepEqual([...browser.alarms.keys()], [TICK]);
  await browser.advance(60000);
  assert.equal(collector.stored.size, 2);
  clean(browser, collector);
});

test("the first send does not wait for the slow first answer of storage.managed", async (t) => {
  const { collector, browser } = await scenario(t);
  await install(browser);
  await browser.advance(60000);
  browser.restartBrowser({ keepAlarms: true });
  const release = browser.holdManaged();
  browser.clock += 60000;
  browser.dispatch("alarm", { name: TICK, scheduledTime: browser.clock, periodInMinutes: 1 });
  await eventually(() => collector.stored.size === 2, "the second record, sent while the policy is still unread");
  assert.equal(browser.managedAnswered, false);
  release();
  await browser.settle();
  assert.equal(browser.managedAnswered, true);
  clean(browser, collector);
});

test("on first install with no other settings, the extension waits for the policy", async (t) => {
  const { collector, browser } = await scenario(t);
  const release = browser.holdManaged();
  browser.dispatch("installed", { reason: "install" });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(collector.requests.length, 0);
  release();
  await browser.settle();
  assert.equal(enrolments(collector).length, 1);
  clean(browser, collector);
});

test("config.json configures a trial install; the policy, once set, overrides it", async (t) => {
  const first = await new FakeCollector().start();
  const second = await new FakeCollector().start();
  t.after(() => Promise.all([first.close(), second.close()]));
  const browser = new FakeBrowser({
    policy: {},
    files: { "config.json": JSON.stringify({ collector_url: first.url, enroll_secret: SECRET, report_interval_s: 30 }) },
    manifest: manifest({ host_permissions: LOOPBACK_HOSTS }),
  });
  await install(browser);
  await browser.advance(30000);
  assert.equal(first.stored.size, 1);
  assert.equal(browser.alarms.get(TICK).periodInMinutes, 0.5);
  await browser.setPolicy({ collector_url: second.url, report_interval_s: 60 });
  assert.equal(browser.alarms.get(TICK).periodInMinutes, 1, "the policy's interval applies at once");
  await browser.advance(60000);
  assert.equal(enrolments(second).length, 1, "enrolled with the new collector, the secret still from config.json");
  assert.equal(second.stored.size, 1);
  assert.equal(first.stored.size, 1);
  const cached = browser.read(KEYS.policy);
  assert.equal(cached.enroll_secret, undefined, "the secret is never cached");
  clean(browser, first);
  clean(browser, second);
});

test("bad settings fall back to their defaults with a line naming each one", async (t) => {
  const { collector, browser } = await scenario(t, { policy: { report_interval_s: 10, idle_detection_s: "abc", colour: 1 } });
  browser.files["config.json"] = "{not json";
  await install(browser);
  const [fileError, ...policyErrors] = browser.read(KEYS.errors);
  assert.match(fileError, /^config\.json: not valid JSON \(.+\); ignored$/); // V8's wording varies
  assert.deepEqual(policyErrors, [
    "policy: report_interval_s: expected a whole number from 30 to 3600, got 10; using 60",
    "policy: idle_detection_s: expected a whole number from 15 to 3600, got \"abc\"; using 60",
    "policy: unknown setting \"colour\" (ignored)",
  ]);
  assert.equal(browser.alarms.get(TICK).periodInMinutes, 1);
  assert.equal(browser.worker.detectionInterval, 60);
  await browser.advance(60000);
  assert.equal(collector.stored.size, 1);
  clean(browser, collector);
});

test("a collector outside the manifest's host permissions: a clear error and no request", async (t) => {
  const { collector, browser } = await scenario(t, { browser: { manifest: manifest() } });
  await install(browser);
  await browser.advance(3 * 60000);
  assert.equal(collector.requests.length, 0);
  const message = `collector_url ${collector.url} is not in the manifest's host_permissions: put its origin there `
    + "before packing the extension (see README)";
  assert.equal(browser.read(KEYS.send).last_error, message);
  assert.deepEqual(browser.logs.error, [`tice: ${message}`], "said once, not at every tick");
  assert.equal(browser.read("spool").next, 4, "records are kept meanwhile");
  clean(browser, collector, { errors: [/host_permissions/] });
});

test("no collector_url or no enrol secret: records wait, and the status says what to set", async (t) => {
  const { collector, browser } = await scenario(t, { policy: { enroll_secret: "" } });
  await install(browser);
  await browser.advance(2 * 60000);
  assert.equal(collector.requests.length, 0);
  assert.match(browser.read(KEYS.send).last_error, /no enroll_secret is set/);
  assert.equal(browser.alarms.has(RETRY), true);
  await browser.setPolicy({ collector_url: collector.url, enroll_secret: SECRET });
  await browser.advance(20 * 60000);
  assert.equal(collector.stored.size, 22);
  clean(browser, collector);
});
