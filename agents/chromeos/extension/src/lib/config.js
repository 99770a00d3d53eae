// Settings: what an administrator can set, their defaults and bounds, and how sources combine.
//
// Sources, strongest first:
//   1. the Admin console policy, read with chrome.storage.managed (declared in schema.json);
//   2. config.json inside the extension directory, for a trial without an Admin console;
//   3. the defaults below.
// chrome.storage.managed can take seconds to answer the first time after the browser starts, so
// the last policy seen is cached in chrome.storage.local (without the enrol secret) and used
// until the fresh answer arrives: a worker woken by an alarm need not wait for it to send.
//
// SETTINGS is the single description of every key; a test checks that schema.json says the same.

export const SETTINGS = Object.freeze({
  collector_url: { type: "string", default: "" },
  enroll_secret: { type: "string", default: "" },
  report_interval_s: { type: "integer", min: 30, max: 3600, default: 60 },
  idle_detection_s: { type: "integer", min: 15, max: 3600, default: 60 },
  device_identity: { type: "string", enum: ["serial", "asset_id"], default: "serial" },
  unmanaged_device: { type: "string", enum: ["ignore", "install_id"], default: "ignore" },
  spool_max_bytes: { type: "integer", min: 65536, max: 8388608, default: 4194304 },
  spool_max_age_days: { type: "integer", min: 1, max: 100, default: 90 },
  batch_max_records: { type: "integer", min: 1, max: 5000, default: 500 },
});

export const SECRET_MIN = 8; // wire/tice_wire/__init__.py Secret
export const SECRET_MAX = 256;
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

export function defaults() {
  return Object.fromEntries(Object.entries(SETTINGS).map(([k, s]) => [k, s.default]));
}

/** The collector's base URL without a trailing slash, or throws Error with a sentence saying what is wrong. */
export function normaliseUrl(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`expected a URL such as https://tice.example.org, got ${JSON.stringify(value)}`);
  }
  const secure = url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.has(url.hostname));
  if (!secure) {
    throw new Error(`must start with https:// (http:// only for localhost), got ${JSON.stringify(value)}`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new Error(`must be a plain base URL without query, fragment or credentials, got ${JSON.stringify(value)}`);
  }
  return (url.origin + url.pathname).replace(/\/+$/, "");
}

function check(key, value) {
  const spec = SETTINGS[key];
  if (spec.type === "integer") {
    if (!Number.isInteger(value) || value < spec.min || value > spec.max) {
      throw new Error(`expected a whole number from ${spec.min} to ${spec.max}, got ${JSON.stringify(value)}`);
    }
    return value;
  }
  if (typeof value !== "string") throw new Error(`expected a string, got ${JSON.stringify(value)}`);
  if (spec.enum && !spec.enum.includes(value)) {
    throw new Error(`expected one of ${spec.enum.join(", ")}, got ${JSON.stringify(value)}`);
  }
  if (key === "collector_url") return value === "" ? "" : normaliseUrl(value);
  if (key === "enroll_secret" && value !== "" && (value.length < SECRET_MIN || value.length > SECRET_MAX)) {
    throw new Error(`expected ${SECRET_MIN} to ${SECRET_MAX} characters, got ${value.length}`);
  }
  return value;
}

/**
 * Validate one source. Returns {values, errors}: `values` holds only the valid keys; each bad or
 * unknown key gives one error line naming the source and the key (the default is used instead).
 */
export function parse(raw, source) {
  const values = {};
  const errors = [];
  if (raw === null || raw === undefined) return { values, errors };
  if (typeof raw !== "object" || Array.isArray(raw)) {
    return { values, errors: [`${source}: expected a JSON object of settings`] };
  }
  for (const [key, value] of Object.entries(raw)) {
    if (!Object.hasOwn(SETTINGS, key)) {
      errors.push(`${source}: unknown setting ${JSON.stringify(key)} (ignored)`);
      continue;
    }
    try {
      values[key] = check(key, value);
    } catch (e) {
      errors.push(`${source}: ${key}: ${e.message}; using ${JSON.stringify(SETTINGS[key].default)}`);
    }
  }
  return { values, errors };
}

/** Defaults, overlaid by each source's valid values in order (later wins). */
export function merge(...layers) {
  return Object.assign(defaults(), ...layers);
}

/** What may be kept in chrome.storage.local: everything but the enrol secret. */
export function withoutSecret(values) {
  const { enroll_secret: _secret, ...rest } = values;
  return rest;
}
