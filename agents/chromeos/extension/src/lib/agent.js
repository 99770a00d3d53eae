// The extension's work: measure, spool, enrol, send. Wired to Chrome's events by start().
//
// A Manifest V3 service worker is stopped after 30 s without events (5 min at most per event)
// and started again for the next event, running the module from the top. So:
// * listeners are registered synchronously in start(), at the module's top level, or the event
//   that woke the worker is missed;
// * every fact lives in chrome.storage.local (tally, spool, credentials, send state); memory holds
//   only what a new worker may forget: the batch in flight (resent, and stored once by the
//   collector) and locks;
// * timers are alarms ("tick" every report_interval_s, "retry" once for a backoff), which Chrome
//   keeps across worker restarts; alarms fire at most every 30 s, so no wait is shorter.
// State is written in single atomic chrome.storage.local.set calls (see spool.js), so a worker
// stopped between any two calls loses nothing and duplicates nothing.

import * as settings from "./config.js";
import { deviceIdentity } from "./identity.js";
import * as net from "./sender.js";
import { Spool } from "./spool.js";
import * as usage from "./usage.js";

export const TICK = "tick";
export const RETRY = "retry";
export const ALARM_MIN_S = 30; // Chrome 120+: alarms fire at most every 30 s
export const KEYS = Object.freeze({
  tally: "tally",
  send: "send",
  creds: "creds",
  identity: "identity",
  policy: "policy_cache",
  config: "config",
  errors: "config_errors",
});
const DRAIN_BATCHES_PER_WAKE = 20; // a backlog drains over several wakes, not in one burst
const DRAIN_PAUSE_MS = 500;

class Mutex {
  constructor() {
    this.tail = Promise.resolve();
  }

  run(fn) {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => {});
    return result;
  }
}

export function newSendState() {
  return { attempt: 0, next_attempt_at: null, last_attempt_at: null, last_success_at: null, last_error: null,
    auth_failed: false, batches_sent: 0, records_sent: 0, records_duplicate: 0, records_rejected: 0,
    clock_offset_s: null };
}

export class Agent {
  /** env: {fetch, now() -> ms, random() -> [0, 1), sleep(ms), log} */
  constructor(chrome, env) {
    this.chrome = chrome;
    this.env = env;
    this.log = env.log ?? console;
    this.lock = new Mutex();
    this.local = chrome.storage.local;
    this.pending = new Set();
    this.sending = null;
    this.policyValues = null; // the fresh chrome.storage.managed answer, once it came
    this.ready = this._init();
  }

  // -- events --------------------------------------------------------------------------------

  /** Run one event's work; errors are logged, never thrown at Chrome. Tracked for settled(). */
  handle(what, fn) {
    const p = (async () => {
      try {
        await fn();
      } catch (e) {
        this.log.error(`tice: ${what} failed: ${e && e.stack ? e.stack : e}`);
      }
    })();
    this.pending.add(p);
    p.finally(() => this.pending.delete(p));
    return p;
  }

  /** Resolves when every event handled so far is done (tests, and nothing else, wait on this). */
  async settled() {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  /** The profile starts (or the extension is installed): an observation, then send what waits. */
  async onStartup() {
    await this.ready;
    const state = await this._queryState();
    if (state) await this.onIdle(state);
    await this.sendCycle();
  }

  /** An observation of the idle state (an event, or a query at startup). */
  async onIdle(state) {
    await this.ready;
    if (!this.identity.serial) return;
    await this.lock.run(async () => {
      const now = this.env.now();
      const stored = (await this.local.get(KEYS.tally))[KEYS.tally];
      if (!stored) {
        await this.local.set({ [KEYS.tally]: usage.fresh(now, state) });
        return;
      }
      const { tally, record } = usage.advance(stored, now, this._maxGapMs());
      await this.spool.add(record ? [record] : [], now, { [KEYS.tally]: usage.withState(tally, state) });
    });
  }

  async onTick() {
    await this.ready;
    if (this.identity.serial) {
      await this.lock.run(async () => {
        const now = this.env.now();
        const state = await this._queryState();
        const stored = (await this.local.get(KEYS.tally))[KEYS.tally];
        const records = [];
        let next;
        if (stored) {
          const advanced = usage.advance(stored, now, this._maxGapMs());
          if (advanced.record) records.push(advanced.record);
          const closed = usage.close(advanced.tally);
          if (closed.record) records.push(closed.record);
          next = closed.next;
        } else {
          next = usage.fresh(now, state ?? "active");
        }
        // The interval record and the tally that follows it are written together.
        await this.spool.add(records, now, { [KEYS.tally]: state ? usage.withState(next, state) : next });
      });
    }
    await this.sendCycle();
  }

  async onPolicyChanged() {
    await this.ready;
    await this._usePolicy(await this._readPolicy());
  }

  // -- configuration -------------------------------------------------------------------------

  async _init() {
    const got = await this.local.get(KEYS.policy);
    this.policyCache = got[KEYS.policy] ?? null;
    this.file = await this._readFile();
    const policy = this._readPolicy(); // the first answer can take seconds: not awaited unless needed
    if (this.policyCache === null && !this.file.values.collector_url) {
      await this._usePolicy(await policy, { apply: false }); // first run: nothing else to go on
    } else {
      this._recompute();
    }
    this.spool = await Spool.open(this.local, this._limits(), () => crypto.randomUUID());
    await this._apply();
    this.policyApplied = this.handle("policy", async () => this._usePolicy(await policy));
  }

  async _readFile() {
    let text;
    try {
      const resp = await this.env.fetch(this.chrome.runtime.getURL("config.json"));
      if (!resp.ok) return { values: {}, errors: [] };
      text = await resp.text();
    } catch {
      return { values: {}, errors: [] }; // no config.json: the normal case
    }
    try {
      return settings.parse(JSON.parse(text), "config.json");
    } catch (e) {
      return { values: {}, errors: [`config.json: not valid JSON (${e.message}); ignored`] };
    }
  }

  async _readPolicy() {
    try {
      return settings.parse(await this.chrome.storage.managed.get(null), "policy");
    } catch (e) {
      return { values: {}, errors: [`policy: cannot read chrome.storage.managed (${e.message})`] };
    }
  }

  _recompute() {
    const policy = this.policyValues ?? this.policyCache ?? {};
    this.config = settings.merge(this.file.values, policy);
  }

  async _usePolicy(p, { apply = true } = {}) {
    const before = JSON.stringify(this.config);
    this.policyValues = p.values;
    this._recompute();
    const errors = [...this.file.errors, ...p.errors];
    for (const e of errors) this.log.warn(`tice: ${e}`);
    await this.local.set({ [KEYS.policy]: settings.withoutSecret(p.values), [KEYS.errors]: errors,
      [KEYS.config]: settings.withoutSecret(this.config) });
    if (apply && JSON.stringify(this.config) !== before) await this._apply();
  }

  _limits() {
    return { maxBytes: this.config.spool_max_bytes, maxAgeMs: this.config.spool_max_age_days * 86400000, log: this.log };
  }

  /**
   * Longer than this without an observation, the extension was not running. One missed tick
   * (a worker stopped mid-event, a late alarm) is tolerated; a sleep shorter than this counts
   * in the state before it, which is "locked" when the lid closes on a locking device.
   */
  _maxGapMs() {
    const s = this.config.report_interval_s;
    return 1000 * (2 * s + ALARM_MIN_S);
  }

  /** Make Chrome follow the configuration: spool bounds, idle detection, the tick alarm, identity. */
  async _apply() {
    const c = this.config;
    Object.assign(this.spool, { maxBytes: c.spool_max_bytes, maxAgeMs: c.spool_max_age_days * 86400000 });
    // A new worker starts with Chrome's default (60 s): set it every time.
    this.chrome.idle.setDetectionInterval(c.idle_detection_s);
    const period = c.report_interval_s / 60;
    const alarm = await this.chrome.alarms.get(TICK);
    // Creating an alarm again restarts its period, so only when missing or changed.
    if (!alarm || alarm.periodInMinutes !== period) {
      await this.chrome.alarms.create(TICK, { delayInMinutes: period, periodInMinutes: period });
    }
    this.identity = await deviceIdentity(this.chrome, c);
    await this.local.set({ [KEYS.identity]: this.identity, [KEYS.config]: settings.withoutSecret(c) });
  }

  /** The enrol secret, once the policy has answered (the cache never holds it). */
  async _secret() {
    await this.policyApplied;
    return this.config.enroll_secret;
  }

  async _queryState() {
    try {
      return await this.chrome.idle.queryState(this.config.idle_detection_s);
    } catch (e) {
      this.log.warn(`tice: chrome.idle.queryState failed: ${e.message}`);
      return null;
    }
  }

  // -- sending -------------------------------------------------------------------------------

  /** Send what waits, unless a send is already running in this worker or a backoff is pending. */
  sendCycle() {
    if (!this.sending) {
      this.sending = this._drain().finally(() => {
        this.sending = null;
      });
    }
    return this.sending;
  }

  async _drain() {
    const cycle = { reenrolled: false };
    let outcome;
    for (let i = 0; i < DRAIN_BATCHES_PER_WAKE; i++) {
      outcome = await this._sendOnce(cycle);
      if (outcome !== "sent" || this.spool.depth === 0) break;
      await this.env.sleep(DRAIN_PAUSE_MS);
    }
    return outcome;
  }

  async _sendState() {
    return { ...newSendState(), ...(await this.local.get(KEYS.send))[KEYS.send] };
  }

  async _sendOnce(cycle) {
    const st = await this._sendState();
    const now = this.env.now();
    if (st.next_attempt_at !== null && now < st.next_attempt_at) return "waiting";
    if (!this.identity.serial) return "not_measuring";
    const url = this.config.collector_url;
    if (!url) return this._unconfigured(st, "no collector_url is set: add it to the extension's policy (see README)");
    if (!(await this.chrome.permissions.contains({ origins: [`${url}/*`] }))) {
      return this._unconfigured(st, `collector_url ${url} is not in the manifest's host_permissions: `
        + "put its origin there before packing the extension (see README)");
    }
    let creds = (await this.local.get(KEYS.creds))[KEYS.creds];
    if (!creds || creds.server !== url || creds.serial !== this.identity.serial) {
      const e = await this._enrol(url);
      if (e.error) return this._failed(st, e.error, null);
      creds = e.creds;
    }

    const batch = await this.lock.run(() => this.spool.take(this.config.batch_max_records, net.BATCH_MAX_BYTES));
    if (!batch) return "empty";
    const body = { device_id: creds.device_id, spool: this.spool.id, sent_at: new Date(now).toISOString(),
      records: batch.records, dropped: Math.min(this.spool.dropped, 2 ** 31),
      agent_version: `tice-chrome/${this.chrome.runtime.getManifest().version}`.slice(0, 64) };
    st.last_attempt_at = now;
    let answer;
    try {
      answer = await net.postBatch(this.env.fetch, url, creds.token, body);
    } catch (e) {
      await this._settle(() => this.spool.release(batch));
      return this._failed(st, e.message, null);
    }
    const kind = net.classify(answer.status);
    if (kind === "sent") {
      await this._settle(() => this.spool.ack(batch));
      return this._sent(st, answer.text, batch.records.length);
    }
    const reason = net.problem(answer.status, answer.text);
    if (kind === "dead_letter") {
      const n = await this._settle(() => this.spool.deadLetter(batch, reason));
      this.log.error(`tice: the collector refused a batch for good; ${n} records dropped as dead letters: ${reason}`);
      Object.assign(st, { attempt: 0, next_attempt_at: null, last_error: reason });
      await this.local.set({ [KEYS.send]: st });
      return "dead_letter";
    }
    await this._settle(() => this.spool.release(batch));
    if (kind === "reenrol") {
      if (!cycle.reenrolled) {
        cycle.reenrolled = true; // once per cycle: a second 401 waits for a backoff
        const e = await this._enrol(url);
        if (e.error) return this._failed(st, `token rejected (${reason}) and ${e.error}`, null);
        this.log.warn(`tice: device token was rejected; enrolled again as device ${e.creds.device_id}`);
        return this._sendOnce(cycle);
      }
      st.auth_failed = true;
      return this._failed(st, `the collector rejects this device's token even after enrolling again: ${reason}`, null);
    }
    return this._failed(st, reason, net.parseRetryAfter(answer.retryAfter, this.env.now()));
  }

  async _settle(fn) {
    return this.lock.run(async () => {
      const result = await fn();
      await this.spool.enforce(this.env.now());
      return result;
    });
  }

  async _enrol(url) {
    const secret = await this._secret();
    if (!secret) return { error: "no enroll_secret is set: add the school's enrol secret to the extension's policy" };
    let res;
    try {
      res = await net.enroll(this.env.fetch, url, { secret, serial: this.identity.serial });
    } catch (e) {
      return { error: `enrolment failed: ${e.message}` };
    }
    const creds = { server: url, serial: this.identity.serial, device_id: res.device_id, token: res.token,
      school: res.school, enrolled_at: this.env.now() };
    await this.local.set({ [KEYS.creds]: creds });
    this.log.info(`tice: enrolled as device ${res.device_id} of school ${res.school}`);
    return { creds };
  }

  async _sent(st, text, n) {
    let res = null;
    try {
      res = JSON.parse(text); // 200 means committed; an odd body does not change that
    } catch {
      res = null;
    }
    Object.assign(st, { attempt: 0, next_attempt_at: null, last_success_at: this.env.now(), last_error: null,
      auth_failed: false, batches_sent: st.batches_sent + 1, records_sent: st.records_sent + n });
    if (res && typeof res === "object") {
      st.records_duplicate += Number(res.duplicates) || 0;
      st.records_rejected += Number(res.rejected) || 0;
      if (typeof res.clock_offset_s === "number") st.clock_offset_s = res.clock_offset_s;
      if (res.rejected) this.log.warn(`tice: the collector stored the batch but rejected ${res.rejected} records`);
    }
    await this.local.set({ [KEYS.send]: st });
    await this.chrome.alarms.clear(RETRY);
    return "sent";
  }

  async _unconfigured(st, message) {
    if (st.last_error !== message) this.log.error(`tice: ${message}`);
    st.last_error = message;
    await this.local.set({ [KEYS.send]: st });
    return "unconfigured";
  }

  /** Back off: full jitter, never sooner than Retry-After; the retry alarm wakes the worker. */
  async _failed(st, reason, retryAfterS) {
    const now = this.env.now();
    const delay = net.backoffDelay(st.attempt, this.env.random, retryAfterS);
    Object.assign(st, { attempt: st.attempt + 1, last_error: reason, next_attempt_at: now + Math.round(delay * 1000) });
    await this.local.set({ [KEYS.send]: st });
    await this.chrome.alarms.create(RETRY, { when: Math.max(st.next_attempt_at, now + ALARM_MIN_S * 1000) });
    this.log.warn(`tice: send failed, next attempt in ${Math.round(delay)} s: ${reason}`);
    return "retry";
  }
}

/**
 * Create the agent and register every listener synchronously (this must run at the service
 * worker's top level). Returns the agent.
 */
export function start(chrome, env) {
  const agent = new Agent(chrome, env);
  chrome.idle.onStateChanged.addListener((state) => agent.handle("idle", () => agent.onIdle(state)));
  chrome.alarms.onAlarm.addListener((alarm) => {
    if (alarm.name === TICK) return agent.handle("tick", () => agent.onTick());
    if (alarm.name === RETRY) return agent.handle("retry", async () => {
      await agent.ready;
      await agent.sendCycle();
    });
    return undefined;
  });
  chrome.storage.onChanged.addListener((_changes, area) => {
    if (area === "managed") return agent.handle("policy", () => agent.onPolicyChanged());
    return undefined;
  });
  chrome.runtime.onStartup.addListener(() => agent.handle("startup", () => agent.onStartup()));
  chrome.runtime.onInstalled.addListener(() => agent.handle("installed", () => agent.onStartup()));
  agent.handle("init", () => agent.ready);
  return agent;
}
