// HTTP to the collector: enrolment, one batch, and the retry rule (the Python agent's, agents/tice_agent/sender.py).
//
// * 200: committed; only then are the records removed from the spool.
// * network error, timeout, 408, 429, 5xx and any other unexpected answer: kept, and retried after
//   max(Retry-After, uniform(0, min(cap, base * factor ** attempt))): exponential backoff with
//   full jitter, never sooner than the server asked.
// * 400, 403, 413: the collector will never take this batch; its records are removed and counted
//   as dead letters, with the reason from the problem body.
// * 401: the token is unknown or revoked: enrol again with the policy's secret and resend, once.
// Problem bodies are {"error": code, "detail": sentence} (docs/ingest.md).

export const BACKOFF = Object.freeze({ base_s: 30, factor: 2, cap_s: 900 });
export const MAX_RETRY_AFTER_S = 86400; // a bogus header must not park the device for a year
export const TIMEOUT_MS = 30000;
export const GZIP_MIN_BYTES = 1024;
export const BATCH_MAX_BYTES = 262144; // as the Python agent: 256 KiB of JSON before gzip

export class NetworkError extends Error {}

export class EnrollError extends Error {
  constructor(message, status = null) {
    super(message);
    this.status = status;
  }
}

/** RFC 9110 Retry-After: delay-seconds or an HTTP-date, in seconds from `nowMs`; null when absent or unreadable. */
export function parseRetryAfter(value, nowMs) {
  if (value === null || value === undefined) return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text), MAX_RETRY_AFTER_S);
  // An HTTP-date names its day and month in letters; Date.parse alone would accept "1.5".
  if (!/^[A-Za-z]{3}, /.test(text)) return null;
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.min(Math.max(0, (when - nowMs) / 1000), MAX_RETRY_AFTER_S);
}

/** The upper bound of the wait after `attempt` consecutive failures (0-based), in seconds. */
export function ceiling(attempt, b = BACKOFF) {
  return Math.min(b.cap_s, b.base_s * b.factor ** attempt);
}

/** Full jitter in [0, ceiling], but never less than what the server asked for. Seconds. */
export function backoffDelay(attempt, random, retryAfterS = null, b = BACKOFF) {
  return Math.max(retryAfterS ?? 0, random() * ceiling(attempt, b));
}

/** What to do with a batch the collector answered with `status`. */
export function classify(status) {
  if (status === 200) return "sent";
  if (status === 400 || status === 403 || status === 413) return "dead_letter";
  if (status === 401) return "reenrol";
  return "retry";
}

/** "HTTP 400 invalid: $.records[0].active_s ..." from a problem body, or the start of any other body. */
export function problem(status, text) {
  try {
    const p = JSON.parse(text);
    if (p && typeof p.error === "string") return `HTTP ${status} ${p.error}: ${p.detail ?? ""}`.slice(0, 300);
  } catch {
    // not a problem body
  }
  const start = String(text ?? "").slice(0, 200).trim();
  return `HTTP ${status}` + (start ? `: ${start}` : "");
}

async function post(fetch, url, body, headers, timeoutMs) {
  let resp;
  let text;
  try {
    resp = await fetch(url, { method: "POST", body, headers, signal: AbortSignal.timeout(timeoutMs), credentials: "omit" });
    text = await resp.text();
  } catch (e) {
    throw new NetworkError(`cannot reach ${url}: ${e && e.name === "TimeoutError" ? "timed out" : e}`);
  }
  return { status: resp.status, retryAfter: resp.headers.get("Retry-After"), text };
}

async function gzip(text) {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Trade the school's enrol secret for this device's token: {device_id, token, school}. Throws EnrollError. */
export async function enroll(fetch, base, { secret, serial }, timeoutMs = TIMEOUT_MS) {
  const body = JSON.stringify({ secret, serial, kind: "chromebook" });
  let answer;
  try {
    answer = await post(fetch, `${base}/api/v1/enroll`, body, { "Content-Type": "application/json" }, timeoutMs);
  } catch (e) {
    throw new EnrollError(e.message);
  }
  if (answer.status !== 201) throw new EnrollError(problem(answer.status, answer.text), answer.status);
  let res;
  try {
    res = JSON.parse(answer.text);
  } catch {
    res = null;
  }
  if (!res || typeof res.device_id !== "string" || typeof res.token !== "string") {
    throw new EnrollError(`unexpected enrol answer: ${answer.text.slice(0, 200)}`, answer.status);
  }
  return { device_id: res.device_id, token: res.token, school: String(res.school ?? "") };
}

/** POST one batch (a wire Batch object). Returns {status, retryAfter, text}; throws NetworkError. */
export async function postBatch(fetch, base, token, batch, timeoutMs = TIMEOUT_MS) {
  const json = JSON.stringify(batch);
  const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  let body = json;
  if (json.length >= GZIP_MIN_BYTES) {
    body = await gzip(json);
    headers["Content-Encoding"] = "gzip";
  }
  return post(fetch, `${base}/api/v1/reports`, body, headers, timeoutMs);
}
