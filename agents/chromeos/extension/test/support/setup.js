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
