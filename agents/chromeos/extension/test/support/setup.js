// One extension on a managed Chromebook, pointed at a loopback collector.

import { FakeBrowser, manifest } from "./browser.js";
import { FakeCollector, SECRET } from "./collector.js";

export const LOOPBACK_HOSTS = ["http://127.0.0.1/*"];

/** {collector, browser}; the collector is closed when the test ends. */
export async function scenario(t, { policy = {}, browser = {} } = {}) {
  const collector = await new FakeCollector().start();
  t.after(() => collector.close());
  const b = new FakeBrowser({
    policy: { collector_url: collector.url, enroll_secret: SECRET, ...policy },
    manifest: manifest({ host_permissions: LOOPBACK_HOSTS }),
    ...browser,
  });
  return { collector, browser: b };
}

/** Chrome installs the extension: onInstalled wakes the worker. */
export async function install(browser) {
  browser.dispatch("installed", { reason: "install" });
  await browser.settle();
}

export const reports = (collector) => collector.requests.filter((r) => r.path === "/api/v1/reports");
export const enrolments = (collector) => collector.requests.filter((r) => r.path === "/api/v1/enroll");

/** What every scenario must end with: valid requests only, no alarm under 30 s, no unexpected error. */
export function clean(browser, collector, { errors = [] } = {}) {
  if (collector) assertEmpty(collector.invalid, "requests that break the wire format");
  assertEmpty(browser.warnings, "alarms Chrome would have raised to 30 s");
  const unexpected = browser.logs.error.filter((e) => !errors.some((re) => re.test(e)));
  assertEmpty(unexpected, "errors logged");
}

function assertEmpty(list, what) {
  if (list.length) throw new Error(`${what}: ${JSON.stringify(list, null, 1)}`);
}

/** Poll (real time) for a condition while the worker does its work; says what it waited for. */
export async function eventually(check, what, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
