// A collector on loopback for the node tests: the documented API (docs/ingest.md) with
// exactly-once storage by delivery key, every request body checked against the wire schema,
// and answers a test can script (statuses, Retry-After) or hold (to stop the worker mid-send).
// The end-to-end test (tests/integration/test_chrome_extension.py) uses the real collector.

import { createServer } from "node:http";
import { gunzipSync } from "node:zlib";
import { randomUUID } from "node:crypto";

import { validate } from "./wire.js";

export const SECRET = "school-secret-0001";
export const SCHOOL = "0210001A";

function problem(res, status, error, detail, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify({ error, detail }));
}

export class FakeCollector {
  constructor() {
    this.devices = new Map(); // serial -> {id, serial, kind}
    this.tokens = new Map(); // token -> device id
    this.stored = new Map(); // "device|spool|seq|at" -> record
    this.dropped = new Map(); // "device|spool" -> greatest dropped count seen
    this.requests = []; // {path, body, status, headers}
    this.invalid = []; // schema errors in any request body: a test expects none
    this.script = []; // answers to give to the next /api/v1/reports requests, in order
    this.enrolScript = [];
    this.beforeReply = null; // async (request) => void, called after storing, before answering
    this.duplicates = 0;
    this.bySeq = new Map(); // "spool|seq" -> the record's JSON: a seq must never name two records
    this.failWith = null; // {status, headers}: answer every report so until cleared (an outage)
  }

  async start() {
    this.server = createServer((req, res) => this._handle(req, res).catch((e) => {
      this.invalid.push(`collector crashed: ${e.stack}`);
      problem(res, 500, "internal", String(e));
    }));
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async close() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Revoke every token of a device (an administrator re-enrolled or revoked it). */
  revokeAll() {
    this.tokens.clear();
  }

  seqs(spool = null) {
    return [...this.stored.values()].filter((r) => !spool || r._spool === spool).map((r) => r.seq).sort((a, b) => a - b);
  }

  records() {
    return [...this.stored.values()].sort((a, b) => a.seq - b.seq);
  }

  async _body(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    let buf = Buffer.concat(chunks);
    if (req.headers["content-encoding"] === "gzip") buf = gunzipSync(buf);
    return JSON.parse(buf.toString("utf8"));
  }

  async _handle(req, res) {
    const body = await this._body(req);
    const entry = { path: req.url, body, headers: req.headers, status: null };
    this.requests.push(entry);
    if (req.headers["content-type"] !== "application/json") this.invalid.push(`${req.url}: Content-Type ${req.headers["content-type"]}`);
    if (req.url === "/api/v1/enroll") return this._enroll(body, entry, res);
    if (req.url === "/api/v1/reports") return this._reports(req, body, entry, res);
    entry.status = 404;
    return problem(res, 404, "not_found", req.url);
  }

  _enroll(body, entry, res) {
    this.invalid.push(...validate("EnrollRequest", body).map((e) => `enroll ${e}`));
    const scripted = this.enrolScript.shift();
    if (scripted) {
      entry.status = scripted.status;
      return problem(res, scripted.status, scripted.error ?? "scripted", scripted.detail ?? "scripted answer");
    }
    if (body.secret !== SECRET) {
      entry.status = 401;
      return problem(res, 401, "invalid_secret", "unknown or revoked enrol secret");
    }
    let device = this.devices.get(body.serial);
    if (!device) {
      device = { id: randomUUID(), serial: body.serial, kind: body.kind };
      this.devices.set(body.serial, device);
    }
    for (const [t, id] of this.tokens) if (id === device.id) this.tokens.delete(t); // re-enrolment rotates the token
    const token = randomUUID().replaceAll("-", "");
    this.tokens.set(token, device.id);
    entry.status = 201;
    res.writeHead(201, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ device_id: device.id, token, school: SCHOOL }));
  }

  async _reports(req, body, entry, res) {
    this.invalid.push(...validate("Batch", body).map((e) => `batch ${e}`));
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
    const deviceId = m && this.tokens.get(m[1]);
    for (const r of body.records ?? []) {
      const k = `${body.spool}|${r.seq}`;
      const text = JSON.stringify(r);
      if (this.bySeq.has(k) && this.bySeq.get(k) !== text) this.invalid.push(`seq ${k} names two records: ${this.bySeq.get(k)} and ${text}`);
      this.bySeq.set(k, text);
    }
    const scripted = this.script.shift() ?? this.failWith;
    if (scripted) {
      entry.status = scripted.status;
      return problem(res, scripted.status, scripted.error ?? "scripted", scripted.detail ?? "scripted answer", scripted.headers);
    }
    if (!deviceId) {
      entry.status = 401;
      return problem(res, 401, "invalid_token", "unknown or revoked device token; enrol the device again",
        { "WWW-Authenticate": "Bearer" });
    }
    if (body.device_id !== deviceId) {
      entry.status = 403;
      return problem(res, 403, "wrong_device", "the batch names another device");
    }
    let accepted = 0;
    let duplicates = 0;
    for (const r of body.records) {
      const key = `${deviceId}|${body.spool}|${r.seq}|${r.at}`;
      if (this.stored.has(key)) duplicates += 1;
      else {
        this.stored.set(key, { ...r, _device: deviceId, _spool: body.spool });
        accepted += 1;
      }
    }
    this.duplicates += duplicates;
    const dkey = `${deviceId}|${body.spool}`;
    this.dropped.set(dkey, Math.max(this.dropped.get(dkey) ?? 0, body.dropped ?? 0));
    entry.status = 200;
    if (this.beforeReply) await this.beforeReply(entry);
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ accepted, duplicates, rejected: 0, rejections: [], clock_offset_s: 0, clock_corrected: false }));
  }
}
