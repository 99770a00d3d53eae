-- wrk script for bench/ingest.py: POST reports to the collector, or the same records as line
-- protocol to InfluxDB. Each device has its own token and increasing seq, so every record is new.
--
--   wrk -t2 -cN -dS --latency -s bench/wrk_reports.lua URL -- \
--       TARGET DEVICES_FILE TEMPLATES_FILE RECORDS SPOOL BASE_EPOCH THREADS PATH
--
-- TARGET is "tice" (JSON batches, Authorization: Bearer per device) or "influx" (line protocol).
-- DEVICES_FILE has one "device_id token" per line; TEMPLATES_FILE is written by
-- bench/_shapes.py (the envelope, then one record kind per line, cycled over each request's
-- RECORDS records). Record times are BASE_EPOCH + seq (mod 3600) seconds for the collector,
-- and BASE_EPOCH + seq milliseconds for InfluxDB (unique in each series).
--
-- With WRK_RATE=R in the environment, requests are paced to R per second in total (wrk2-style:
-- each thread sends on a fixed schedule; a request whose slot passed while every connection
-- was busy goes out at once and is counted as late). It is read from the environment because
-- wrk decides whether a script paces before it passes the arguments.
--
-- At the end one line "BENCH key=value ..." gives the counts and latencies (µs) for the caller.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

local target, records, spool, base, path, envelope
local devices, kinds, ats = {}, {}, {}
local cursor = 0

function init(args)
  target = args[1]
  records = tonumber(args[4])
  spool = args[5]
  base = tonumber(args[6])
  local nthreads = tonumber(args[7])
  path = args[8]
  local i = 0
  for line in io.lines(args[2]) do
    local id, token = line:match("^(%S+) (%S+)$")
    if id and (i % nthreads) == tid then
      devices[#devices + 1] = {id = id, auth = "Bearer " .. token, seq = 0}
    end
    i = i + 1
  end
  for line in io.lines(args[3]) do
    local kind, json, lp = line:match("^([^\t]+)\t([^\t]+)\t?([^\t]*)$")
    if kind == "envelope" then
      envelope = json
    elseif kind then
      kinds[#kinds + 1] = target == "influx" and lp or json
    end
  end
  for k = 0, 3599 do
    ats[k] = os.date("!%Y-%m-%dT%H:%M:%SZ", base + k)
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = target == "influx" and "text/plain; charset=utf-8" or "application/json"
  if rate then
    interval = 1000 / (rate / nthreads)
  end
end

local sent_sec, sent_at = -1, nil

function request()
  cursor = cursor % #devices + 1
  local d = devices[cursor]
  local parts = {}
  local nk = #kinds
  if target == "influx" then
    for i = 1, records do
      d.seq = d.seq + 1
      parts[i] = string.format(kinds[(i - 1) % nk + 1], d.id, spool, d.seq,
                               base + math.floor(d.seq / 1000), (d.seq % 1000) * 1000000)
    end
    return wrk.format(nil, path, nil, table.concat(parts, "\n"))
  end
  for i = 1, records do
    d.seq = d.seq + 1
    parts[i] = string.format(kinds[(i - 1) % nk + 1], d.seq, ats[d.seq % 3600])
  end
  local sec = os.time()
  if sec ~= sent_sec then
    sent_sec, sent_at = sec, os.date("!%Y-%m-%dT%H:%M:%SZ", sec)
  end
  wrk.headers["Authorization"] = d.auth
  return wrk.format(nil, path, nil, string.format(envelope, d.id, spool, sent_at, table.concat(parts, ",")))
end

rate = tonumber(os.getenv("WRK_RATE") or "")
late, late_max_ms = 0, 0
local start, slot = nil, 0

if rate then
  -- wrk calls delay() before each request on a connection (after its previous answer) and
  -- waits that many milliseconds: each call takes the thread's next slot on the schedule.
  function delay()
    local now = now_ms()
    start = start or now
    local due = start + slot * interval
    slot = slot + 1
    local wait = due - now
    if wait < -1 then
      late = late + 1
      if -wait > late_max_ms then late_max_ms = -wait end
    end
    if wait <= 0 then return 0 end
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, requests)
  local n_late, max_late = 0, 0
  for _, t in ipairs(threads) do
    n_late = n_late + (t:get("late") or 0)
    max_late = math.max(max_late, t:get("late_max_ms") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p90_us=%d p99_us=%d " ..
    "p999_us=%d max_us=%d late=%d late_max_ms=%.1f\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, n_late, max_late))
end
