// Settings, schema.json and the manifest: what an administrator can set, and what the extension may touch.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import test from "node:test";

import { merge, normaliseUrl, parse, SETTINGS, withoutSecret } from "../src/lib/config.js";
import { SRC } from "./support/browser.js";

const read = (name) => JSON.parse(readFileSync(`${SRC}${name}`, "utf8"));

test("schema.json declares exactly the settings the code reads, with the same bounds", () => {
  const schema = read("schema.json");
  assert.equal(schema.type, "object");
  assert.equal(schema.additionalProperties, undefined, "Chrome refuses additionalProperties at the top level");
  assert.deepEqual(Object.keys(schema.properties).sort(), Object.keys(SETTINGS).sort());
  for (const [key, spec] of Object.entries(SETTINGS)) {
    const p = schema.properties[key];
    assert.equal(p.type, spec.type, key);
    assert.equal(p.minimum, spec.min, key);
    assert.equal(p.maximum, spec.max, key);
    assert.deepEqual(p.enum, spec.enum, key);
    assert.ok(p.title && p.description, `${key} needs a title and a description for the Admin console`);
    if (spec.type === "integer") assert.ok(p.description.includes(`default ${spec.default}`), key);
  }
});

test("the Chrome limits are in the bounds: alarms >= 30 s, idle detection >= 15 s, spool under the storage quota", () => {
  assert.equal(SETTINGS.report_interval_s.min, 30);
  assert.equal(SETTINGS.idle_detection_s.min, 15);
  assert.ok(SETTINGS.spool_max_bytes.max <= 10485760 * 0.8, "room left under chrome.storage.local's 10 MB quota");
  assert.ok(SETTINGS.spool_max_age_days.max <= 100, "the collector refuses records older than 100 days");
  assert.ok(SETTINGS.batch_max_records.max <= 5000, "the collector refuses batches over 5000 records");
});

test("valid settings are kept; each bad one is named, and its default used", () => {
  const { values, errors } = parse({
    collector_url: "https://tice.example.org/",
    enroll_secret: "s3cret-enough",
    report_interval_s: 29,
    idle_detection_s: "60",
    device_identity: "mac",
    batch_max_records: 100,
    colour: "blue",
  }, "policy");
  assert.deepEqual(values, { collector_url: "https://tice.example.org", enroll_secret: "s3cret-enough", batch_max_records: 100 });
  assert.deepEqual(errors, [
    "policy: report_interval_s: expected a whole number from 30 to 3600, got 29; using 60",
    "policy: idle_detection_s: expected a whole number from 15 to 3600, got \"60\"; using 60",
    "policy: device_identity: expected one of serial, asset_id, got \"mac\"; using \"serial\"",
    "policy: unknown setting \"colour\" (ignored)",
  ]);
  const merged = merge({ report_interval_s: 120 }, values);
  assert.equal(merged.report_interval_s, 120);
  assert.equal(merged.idle_detection_s, 60);
  assert.equal(withoutSecret(merged).enroll_secret, undefined);
  assert.deepEqual(parse([1], "config.json").errors, ["config.json: expected a JSON object of settings"]);
});

test("the collector URL must be https, except on the loopback interface", () => {
  assert.equal(normaliseUrl("https://tice.example.org:8443/tice/"), "https://tice.example.org:8443/tice");
  assert.equal(normaliseUrl("http://127.0.0.1:8099"), "http://127.0.0.1:8099");
  assert.equal(normaliseUrl("http://localhost:8099/"), "http://localhost:8099");
  assert.throws(() => normaliseUrl("http://tice.example.org"), /must start with https:\/\//);
  assert.throws(() => normaliseUrl("tice.example.org"), /expected a URL such as https:/);
  assert.throws(() => normaliseUrl("https://tice.example.org/?k=1"), /without query/);
  assert.match(parse({ enroll_secret: "short" }, "policy").errors[0], /enroll_secret: expected 8 to 256 characters, got 5/);
});

test("the manifest asks for no access to sites, tabs, history or the user", () => {
  const m = read("manifest.json");
  assert.equal(m.manifest_version, 3);
  assert.deepEqual(m.background, { service_worker: "sw.js", type: "module" });
  assert.deepEqual([...m.permissions].sort(), ["alarms", "enterprise.deviceAttributes", "idle", "storage"]);
  assert.equal(m.optional_permissions, undefined);
  assert.equal(m.content_scripts, undefined);
  assert.equal(m.externally_connectable, undefined);
  // Host access is the collector alone: a wildcard host would also reveal the URLs of matching tabs.
  assert.ok(m.host_permissions.length >= 1);
  for (const p of m.host_permissions) {
    assert.match(p, /^https?:\/\/[^*/]+\/\*$/, `host permission ${p} must name one host`);
  }
  assert.equal(m.storage.managed_schema, "schema.json");
  for (const f of ["sw.js", "schema.json", m.options_ui.page]) assert.ok(existsSync(`${SRC}${f}`), f);
});

test("no source file reaches for tabs, history, URLs of pages or the user's identity", () => {
  const forbidden = /chrome\.(tabs|history|webNavigation|webRequest|scripting|cookies|identity|sessions|topSites|bookmarks|downloads|management)\b|getProfileUserInfo|\.email\b/;
  for (const f of ["sw.js", "status-page.js", "lib/agent.js", "lib/config.js", "lib/identity.js", "lib/sender.js",
    "lib/spool.js", "lib/status.js", "lib/usage.js"]) {
    assert.doesNotMatch(readFileSync(`${SRC}${f}`, "utf8"), forbidden, f);
  }
});

const README = readFileSync(new URL("../README.md", import.meta.url), "utf8");
// Every json block but the manifest excerpt is a whole document.
const objects = [...README.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1])
  .filter((b) => !b.includes('"host_permissions"')).map((b) => JSON.parse(b));

test("the README's policy JSON is what the Admin console takes, with valid settings only", () => {
  const admin = objects.find((o) => o.collector_url?.Value !== undefined);
  assert.ok(admin, "an Admin console policy block");
  for (const [key, v] of Object.entries(admin)) assert.deepEqual(Object.keys(v), ["Value"], key);
  const values = Object.fromEntries(Object.entries(admin).map(([k, v]) => [k, v.Value]));
  assert.deepEqual(parse(values, "policy").errors, []);

  const file = objects.find((o) => o["3rdparty"]);
  assert.deepEqual(parse(file["3rdparty"].extensions.EXTENSION_ID, "policy").errors, []);
  const trial = objects.find((o) => o.unmanaged_device);
  assert.deepEqual(parse(trial, "config.json").errors, []);
});

test("the README's table documents every setting with its default", () => {
  for (const [key, spec] of Object.entries(SETTINGS)) {
    const row = README.split("\n").find((l) => l.startsWith(`| \`${key}\` |`));
    assert.ok(row, `no README row for ${key}`);
    const dflt = row.split("|")[2].trim();
    assert.equal(dflt, spec.default === "" ? "(none)" : typeof spec.default === "string" ? `\`${spec.default}\`` : String(spec.default), key);
  }
});
