// An in-memory Chrome for the extension's modules, enforcing the limits that shape the design.
//
// What it keeps across a worker restart is what Chrome keeps: chrome.storage (local and
// managed), alarms, the idle state of the device. What it loses is everything else: a restart
// makes a new worker generation, runs start() again, and the old generation is dead: its calls
// to chrome.* and the answers to its fetches never settle, as in a stopped worker.
//
// Limits (from developer.chrome.com/docs/extensions/reference/api/{alarms,idle,storage}):
// * alarms: delays and periods under 30 s are raised to 30 s with a warning (Chrome 120+);
//   at most 500 alarms; alarms survive a worker restart, and may be lost on a browser restart.
// * storage.local: QUOTA_BYTES 10485760, counted as key length + JSON length of each value;
//   a set() that would exceed it fails whole ("QUOTA_BYTES quota exceeded"). set() of several
//   keys is atomic. Values round-trip through JSON.
// * storage.managed: read-only ("This is a read-only store."); the first get() after the
//   browser starts can be held by a test (Chrome takes seconds to answer it).
// * idle: queryState / setDetectionInterval refuse less than 15 s; a new worker starts with the
//   default 60 s detection interval; onStateChanged goes to the running worker only.
// * the worker stops after 30 s without events (autoStop), and Chrome starts it for an event.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { start } from "../../src/lib/agent.js";

export const SRC = fileURLToPath(new URL("../../src/", import.meta.url));
export const QUOTA_BYTES = 10485760;
export const ALARM_MIN_MS = 30000;
export const MAX_ALARMS = 500;
export const IDLE_MIN_S = 15;
export const WORKER_IDLE_MS = 30000;
export const EXTENSION_ID = "abcdefghijklmnopabcdefghijklmnop";
export const T0 = Date.UTC(2026, 10, 30, 8, 0, 0); // a Monday morning

const never = () => new Promise(() => {});
const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

export function manifest(overrides = {}) {
  return { ...JSON.parse(readFileSync(new URL("manifest.json", `file://${SRC}`), "utf8")), ...overrides };
}

/** A tiny deterministic PRNG (mulberry32), so backoff jitter is reproducible. */
export function seeded(seed = 1) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Does a manifest match pattern (scheme://host/path, ports ignored) cover `url`? */
export function matches(pattern, url) {
  const m = /^(\*|https?):\/\/(\*|\*\.[^/]+|[^/*]+)(\/.*)$/.exec(pattern);
  if (!m) return false;
  const u = new URL(url);
  const scheme = u.protocol.slice(0, -1);
  if (m[1] === "*" ? !["http", "https"].includes(scheme) : m[1] !== scheme) return false;
  const host = m[2];
  const hostOk = host === "*" || host === u.hostname || (host.startsWith("*.") && (u.hostname === host.slice(2)
    || u.hostname.endsWith(host.slice(1))));
  const path = new RegExp(`^${m[3].replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
  return hostOk && path.test(u.pathname);
}

class Event {
  constructor(worker) {
    this.worker = worker;
    this.listeners = [];
  }

  addListener(fn) {
    if (this.worker.alive) this.listeners.push(fn);
  }

  hasListeners() {
    return this.listeners.length > 0;
  }
}

export class FakeBrowser {
  /**
   * options: policy (managed storage), files ({name: text} inside the extension), enterprise
   * ({serial, assetId}) or null for an unmanaged device, manifest, collector-side fetch (global
   * fetch), seed, autoStop (stop the worker after 30 s without events, default true).
   */
  constructor({ policy = {}, files = {}, enterprise = { serial: "5CD1234XYZ", assetId: "ECOLE-A-17" },
    manifest: man = manifest(), seed = 1, autoStop = true, fetch = globalThis.fetch, entry = start } = {}) {
    this.clock = T0;
    this.local = new Map(); // key -> JSON text
    this.policy = clone(policy);
    this.files = files;
    this.enterprise = enterprise;
    this.manifest = man;
    this.random = seeded(seed);
    this.autoStop = autoStop;
    this.netFetch = fetch;
    this.alarms = new Map();
    this.idleState = "active";
    this.warnings = [];
    this.logs = { info: [], warn: [], error: [] };
    this.worker = null;
    this.generation = 0;
    this.lastEventAt = this.clock;
    this.managedHold = null;
    this.managedAnswered = false;
    this.storageOps = 0;
    this.killAtStorageOp = null;
    this.restarts = 0;
    this.entry = entry;
  }

  // -- storage accounting (what Chrome counts against QUOTA_BYTES) ------------------------------

  bytesInUse() {
    let n = 0;
    for (const [k, v] of this.local) n += k.length + v.length;
    return n;
  }

  read(key) {
    const v = this.local.get(key);
    return v === undefined ? undefined : JSON.parse(v);
  }

  // -- the worker ----------------------------------------------------------------------------

  /** Start a worker generation: a fresh chrome facade, start() at the "top level". */
  startWorker() {
    const worker = { alive: true, gen: ++this.generation, detectionInterval: 60, agent: null };
    worker.died = new Promise((resolve) => {
      worker.die = resolve;
    });
    worker.events = {
      idle: new Event(worker), alarm: new Event(worker), storage: new Event(worker),
      startup: new Event(worker), installed: new Event(worker),
    };
    worker.chrome = this._facade(worker);
    this.worker = worker;
    this.lastEventAt = this.clock;
    const log = {
      info: (m) => this.logs.info.push(m), warn: (m) => this.logs.warn.push(m), error: (m) => this.logs.error.push(m),
    };
    worker.agent = this.entry(worker.chrome, {
      fetch: (url, init) => this._fetch(worker, url, init),
      now: () => this.clock,
      random: this.random,
      sleep: async (ms) => {
        this.clock += ms;
      },
      log,
    });
    return worker;
  }

  /** Stop the worker now (Chrome's idle timeout, an update, an out-of-memory kill...). */
  kill() {
    if (this.worker) {
      this.worker.alive = false;
      this.worker.die();
      this.worker = null;
      this.restarts += 1;
    }
  }

  /** A browser restart: the worker stops, alarms may be lost (Chrome does not promise them), policy re-read. */
  restartBrowser({ keepAlarms = false } = {}) {
    this.kill();
    if (!keepAlarms) this.alarms.clear();
    this.managedAnswered = false;
  }

  ensureWorker() {
    return this.worker ?? this.startWorker();
  }

  /** Deliver an event as Chrome does: start the worker if needed, then call its listeners. */
  dispatch(name, ...args) {
    const worker = this.ensureWorker();
    this.lastEventAt = this.clock;
    for (const fn of worker.events[name].listeners) fn(...args);
  }

  /** Wait until the running worker has finished all it was doing. */
  async settle() {
    const worker = this.worker;
    // A worker stopped meanwhile never finishes: stop waiting for it then.
    if (worker && worker.alive) await Promise.race([worker.agent.settled(), worker.died]);
  }

  /** Move the clock, firing due alarms in order and stopping an idle worker, as Chrome would. */
  async advance(ms) {
    const target = this.clock + ms;
    for (;;) {
      const due = [...this.alarms.values()].filter((a) => a.scheduledTime <= target)
        .sort((a, b) => a.scheduledTime - b.scheduledTime)[0];
      const stopAt = this.worker && this.autoStop ? this.lastEventAt + WORKER_IDLE_MS : Infinity;
      if (stopAt <= target && (!due || stopAt < due.scheduledTime)) {
        this.clock = Math.max(this.clock, stopAt);
        this.kill();
        continue;
      }
      if (!due) break;
      this.clock = Math.max(this.clock, due.scheduledTime);
      const fired = { name: due.name, scheduledTime: due.scheduledTime };
      if (due.periodInMinutes) {
        fired.periodInMinutes = due.periodInMinutes;
        due.scheduledTime = this.clock + due.periodInMinutes * 60000;
      } else {
        this.alarms.delete(due.name);
      }
      this.dispatch("alarm", fired);
      await this.settle();
    }
    this.clock = target;
  }

  /** The device sleeps `ms` (lid closed): no alarm fires meanwhile; overdue ones fire once on wake. */
  async suspend(ms) {
    this.kill();
    this.clock += ms;
    await this.advance(0);
  }

  /** The device's idle state changes: Chrome tells the running (or a new) worker. */
  async setIdle(state) {
    this.idleState = state;
    this.dispatch("idle", state);
    await this.settle();
  }

  /** Hold the next storage.managed first get() until the returned function is called. */
  holdManaged() {
    let release;
    this.managedHold = new Promise((r) => {
      release = r;
    });
    return () => {
      release();
      this.managedHold = null;
    };
  }

  /** An administrator changes the policy: storage.onChanged("managed") fires. */
  async setPolicy(policy) {
    this.policy = clone(policy);
    this.dispatch("storage", {}, "managed");
    await this.settle();
  }

  // -- chrome.* ------------------------------------------------------------------------------

  _guard(worker, fn) {
    return (...args) => {
      if (!worker.alive) return never();
      return fn(...args);
    };
  }

  _storageOp(worker) {
    this.storageOps += 1;
    if (this.killAtStorageOp !== null && this.storageOps === this.killAtStorageOp) {
      this.kill(); // the worker dies before this call takes effect
      return false;
    }
    return worker.alive;
  }

  _facade(worker) {
    const g = (fn) => this._guard(worker, fn);
    const local = {
      QUOTA_BYTES,
      get: g(async (keys) => {
        if (!this._storageOp(worker)) return never();
        const out = {};
        let wanted;
        if (keys === null || keys === undefined) wanted = [...this.local.keys()];
        else if (typeof keys === "string") wanted = [keys];
        else if (Array.isArray(keys)) wanted = keys;
        else {
          for (const [k, dflt] of Object.entries(keys)) out[k] = this.local.has(k) ? this.read(k) : dflt;
          return out;
        }
        for (const k of wanted) if (this.local.has(k)) out[k] = this.read(k);
        return out;
      }),
      set: g(async (items) => {
        if (!this._storageOp(worker)) return never();
        const next = new Map(this.local);
        for (const [k, v] of Object.entries(items)) {
          if (v === undefined) continue;
          next.set(k, JSON.stringify(v));
        }
        let n = 0;
        for (const [k, v] of next) n += k.length + v.length;
        if (n > QUOTA_BYTES) throw new Error("QUOTA_BYTES quota exceeded");
        this.local = next;
      }),
      remove: g(async (keys) => {
        if (!this._storageOp(worker)) return never();
        for (const k of typeof keys === "string" ? [keys] : keys) this.local.delete(k);
      }),
      getBytesInUse: g(async () => this.bytesInUse()),
    };
    const managed = {
      get: g(async () => {
        if (!this.managedAnswered && this.managedHold) await this.managedHold;
        this.managedAnswered = true;
        if (!worker.alive) return never();
        return clone(this.policy);
      }),
      set: g(async () => {
        throw new Error("This is a read-only store.");
      }),
    };
    const alarms = {
      create: g(async (name, info = {}) => {
        let when;
        let period = info.periodInMinutes;
        if (period !== undefined && period * 60000 < ALARM_MIN_MS) {
          this.warnings.push(`alarm ${name}: periodInMinutes ${period} raised to 0.5`);
          period = 0.5;
        }
        if (info.when !== undefined) when = info.when;
        else if (info.delayInMinutes !== undefined) when = this.clock + info.delayInMinutes * 60000;
        else when = this.clock + (period ?? 0) * 60000;
        if (when - this.clock < ALARM_MIN_MS) {
          this.warnings.push(`alarm ${name}: fires in ${when - this.clock} ms, raised to 30 s`);
          when = this.clock + ALARM_MIN_MS;
        }
        if (!this.alarms.has(name) && this.alarms.size >= MAX_ALARMS) throw new Error("too many alarms (500)");
        this.alarms.set(name, { name, scheduledTime: when, ...(period ? { periodInMinutes: period } : {}) });
      }),
      get: g(async (name) => clone(this.alarms.get(name))),
      getAll: g(async () => [...this.alarms.values()].map(clone)),
      clear: g(async (name) => this.alarms.delete(name)),
      onAlarm: worker.events.alarm,
    };
    const idle = {
      queryState: g(async (seconds) => {
        if (!Number.isInteger(seconds) || seconds < IDLE_MIN_S) throw new TypeError("Value must be at least 15.");
        return this.idleState;
      }),
      setDetectionInterval: (seconds) => {
        if (!worker.alive) return;
        if (!Number.isInteger(seconds) || seconds < IDLE_MIN_S) throw new TypeError("Value must be at least 15.");
        worker.detectionInterval = seconds;
      },
      onStateChanged: worker.events.idle,
    };
    const chrome = {
      storage: { local, managed, onChanged: worker.events.storage },
      alarms,
      idle,
      runtime: {
        id: EXTENSION_ID,
        lastError: undefined,
        getManifest: () => clone(this.manifest),
        getURL: (path) => `chrome-extension://${EXTENSION_ID}/${path}`,
        onStartup: worker.events.startup,
        onInstalled: worker.events.installed,
      },
      permissions: {
        contains: g(async ({ origins = [] }) => origins.every((o) => (this.manifest.host_permissions ?? [])
          .some((p) => matches(p, o.replace(/\*$/, ""))))),
      },
    };
    if (this.enterprise) {
      chrome.enterprise = {
        deviceAttributes: {
          getDeviceSerialNumber: (cb) => worker.alive && cb(this.enterprise.serial ?? ""),
          getDeviceAnnotatedAssetId: (cb) => worker.alive && cb(this.enterprise.assetId ?? ""),
        },
      };
    }
    return chrome;
  }

  async _fetch(worker, url, init) {
    if (!worker.alive) return never();
    const u = String(url);
    if (u.startsWith("chrome-extension://")) {
      const name = u.slice(`chrome-extension://${EXTENSION_ID}/`.length);
      if (!Object.hasOwn(this.files, name)) throw new TypeError("Failed to fetch");
      return new Response(this.files[name], { status: 200 });
    }
    const origin = new URL(u).origin;
    if (!(this.manifest.host_permissions ?? []).some((p) => matches(p, u))) {
      throw new TypeError(`Failed to fetch (no host permission for ${origin}: CORS)`);
    }
    const resp = await this.netFetch(u, init);
    const text = await resp.text();
    if (!worker.alive) return never(); // a stopped worker never sees the answer
    return new Response(text, { status: resp.status, headers: resp.headers });
  }
}
