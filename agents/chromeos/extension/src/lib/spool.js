// The spool: records wait in chrome.storage.local until the collector has committed them.
//
// The same rules as the Python agent's SQLite spool (agents/tice_agent/spool.py), on a key-value store:
// * Delivery key. `meta.id` is a random UUID made when the spool is created; a record's `seq`
//   comes from `meta.next`, which only grows. (spool, seq) is unique for the profile's life; the
//   collector stores a resend once.
// * A FIFO queue: records are keys `r:<seq>` for head <= seq < next. A batch is taken from the
//   head and, once settled (committed, or refused for good), the head moves past it.
// * Atomic steps. Each change is one chrome.storage.local.set (one write batch in Chrome): a new
//   record goes in together with its meta (and the usage tally, see agent.js); a settled batch is
//   first cut off by moving `meta.head`, then its keys are removed. A worker stopped between the
//   two leaves keys below head, listed in `meta.garbage` and removed when the spool next opens.
// * Bounds. Total bytes (counted as Chrome counts its quota: key length + JSON length) and age
//   are bounded; the OLDEST records are dropped first and counted in `meta.dropped`, which every
//   batch carries. Records in flight are never dropped (a drop must never be a record the
//   collector then acknowledges), so while a batch is out the bound waits for it to settle.
// * Records the collector refuses for good (400/403/413) are removed and counted in
//   `meta.dead_letter`, with the reason.
// Nothing is in flight when a worker starts: a batch a stopped worker had sent is sent again.

export const META = "spool";
export const QUOTA_BYTES = 10485760; // chrome.storage.local without "unlimitedStorage"
const key = (seq) => `r:${seq}`;
const sizeOf = (k, v) => k.length + JSON.stringify(v).length;

function isQuotaError(e) {
  return /quota/i.test(String(e && e.message));
}

export class Spool {
  constructor(area, meta, limits) {
    this.area = area;
    this.meta = meta;
    this.maxBytes = limits.maxBytes;
    this.maxAgeMs = limits.maxAgeMs;
    this.inflight = null; // the batch out at the collector, in this worker only
    this.log = limits.log || console;
  }

  /** Load (or create) the spool and finish any removal a stopped worker left undone. */
  static async open(area, limits, newId = () => crypto.randomUUID()) {
    const got = await area.get(META);
    let meta = got[META];
    if (!meta) {
      meta = { id: newId(), next: 1, head: 1, bytes: 0, dropped: 0, dead_letter: 0, last_dead_letter: null, garbage: null };
      await area.set({ [META]: meta });
    }
    const spool = new Spool(area, meta, limits);
    if (meta.garbage) {
      const [from, to] = meta.garbage;
      await area.remove(range(from, to).map(key));
      spool.meta = { ...spool.meta, garbage: null };
      await area.set({ [META]: spool.meta });
    }
    return spool;
  }

  get id() {
    return this.meta.id;
  }

  get depth() {
    return this.meta.next - this.meta.head;
  }

  get dropped() {
    return this.meta.dropped;
  }

  /**
   * Append records (without seq) and write `extra` keys in the same atomic set. Returns the seqs
   * given. Enforces the bounds afterwards (unless a batch is in flight).
   */
  async add(records, now, extra = {}) {
    const meta = { ...this.meta };
    const items = { ...extra };
    const seqs = [];
    for (const rec of records) {
      const seq = meta.next++;
      const value = { a: now, r: { ...rec, seq } };
      items[key(seq)] = value;
      meta.bytes += sizeOf(key(seq), value);
      seqs.push(seq);
    }
    items[META] = meta;
    try {
      await this.area.set(items);
      this.meta = meta;
    } catch (e) {
      if (!isQuotaError(e) || !records.length) throw e;
      // Something else filled the storage quota: make room from the oldest, else lose these (counted).
      const freed = this.inflight ? 0 : await this._dropOldest(Math.ceil(this.depth / 10) + records.length);
      if (freed) return this.add(records, now, extra);
      this.meta = { ...this.meta, dropped: this.meta.dropped + records.length };
      await this.area.set({ ...extra, [META]: this.meta });
      this.log.warn(`tice: storage quota full; ${records.length} new records dropped (counted)`);
      return [];
    }
    await this.enforce(now);
    return seqs;
  }

  /** Drop what is too old, then the oldest until under maxBytes. Returns how many were dropped. */
  async enforce(now) {
    if (this.inflight) return 0;
    let dropped = 0;
    while (this.depth > 0) {
      const oldest = await this._read(this.meta.head, Math.min(this.meta.next, this.meta.head + 200));
      let n = 0;
      let bytes = this.meta.bytes;
      for (const [seq, value] of oldest) {
        const tooOld = value && now - value.a > this.maxAgeMs;
        if (!tooOld && bytes <= this.maxBytes) break;
        n = seq - this.meta.head + 1;
        if (value) bytes -= sizeOf(key(seq), value);
      }
      if (n === 0) break;
      dropped += await this._cut(n, bytes, "dropped");
    }
    if (dropped) this.log.warn(`tice: spool full or too old; dropped the ${dropped} oldest records (counted)`);
    return dropped;
  }

  async _dropOldest(count) {
    const rows = await this._read(this.meta.head, Math.min(this.meta.next, this.meta.head + count));
    if (!rows.length) return 0;
    let bytes = this.meta.bytes;
    for (const [seq, value] of rows) if (value) bytes -= sizeOf(key(seq), value);
    return this._cut(rows.length, bytes, "dropped");
  }

  /** Move the head past `n` records (bytes left: `bytes`), counting them under `counter`; then remove them. */
  async _cut(n, bytes, counter, reason) {
    const from = this.meta.head;
    const to = from + n;
    const meta = { ...this.meta, head: to, bytes: Math.max(0, bytes), garbage: [from, to] };
    if (counter) meta[counter] += n;
    if (reason !== undefined) meta.last_dead_letter = reason;
    await this.area.set({ [META]: meta });
    this.meta = meta;
    await this.area.remove(range(from, to).map(key));
    return n;
  }

  async _read(from, to) {
    if (to <= from) return [];
    const keys = range(from, to).map(key);
    const got = await this.area.get(keys);
    return range(from, to).map((seq) => [seq, got[key(seq)]]);
  }

  /**
   * Take the oldest records (at most maxRecords, and maxBytes of JSON but at least one) and mark
   * them in flight. Returns {from, to, records, bytes} or null when the spool is empty.
   */
  async take(maxRecords, maxBytes) {
    if (this.inflight) throw new Error("a batch is already in flight");
    const rows = await this._read(this.meta.head, Math.min(this.meta.next, this.meta.head + maxRecords));
    const records = [];
    let total = 0;
    let bytes = 0;
    let to = this.meta.head;
    for (const [seq, value] of rows) {
      if (value) {
        const size = JSON.stringify(value.r).length;
        if (records.length && total + size > maxBytes) break;
        records.push(value.r);
        total += size;
        bytes += sizeOf(key(seq), value);
      }
      to = seq + 1;
    }
    if (to === this.meta.head) return null;
    this.inflight = { from: this.meta.head, to, records, bytes };
    return this.inflight;
  }

  /** The collector committed the batch: remove it. */
  async ack(batch) {
    this._settle(batch);
    await this._cut(batch.to - batch.from, this.meta.bytes - batch.bytes, null);
  }

  /** The collector refused the batch for good: remove and count it as dead letters. */
  async deadLetter(batch, reason) {
    this._settle(batch);
    await this._cut(batch.to - batch.from, this.meta.bytes - batch.bytes, "dead_letter", String(reason).slice(0, 300));
    return batch.records.length;
  }

  /** Not delivered: the records stay at the head, to be sent again. */
  release(batch) {
    this._settle(batch);
  }

  _settle(batch) {
    if (this.inflight !== batch) throw new Error("settling a batch that is not in flight");
    this.inflight = null;
  }
}

function range(from, to) {
  const out = [];
  for (let i = from; i < to; i++) out.push(i);
  return out;
}
