-- wrk script for bench/ingest.py: POST report batches of N usage readings, each device with
-- its own token and increasing seq, so every record is new.
-- wrk ... -s bench/wrk_reports.lua URL -- DEVICES_FILE RECORDS SPOOL NOW
local devices = {}
local records, spool, now
local thread_index = 0
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local file = args[1]
  records = tonumber(args[2])
  spool = args[3]
  now = args[4]
  local threads = tonumber(args[5])
  local i = 0
  for line in io.lines(file) do
    local id, token = line:match("^(%S+) (%S+)$")
    if id and (i % threads) == tid then
      devices[#devices + 1] = {id = id, token = token, seq = 0}
    end
    i = i + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

-- Byte for byte what the agent sends (msgspec's encoding of collector.wire: every field, in order).
local rec = '{"type":"usage","duration_s":60.0,"active_s":30.0,"idle_s":30.0,"locked_s":0.0,' ..
            '"no_session_s":0.0,"unclassified_s":0.0,"source":"x11","seq":%d,"at":"%s"}'

function request()
  thread_index = thread_index % #devices + 1
  local d = devices[thread_index]
  local parts = {}
  for i = 1, records do
    d.seq = d.seq + 1
    parts[i] = string.format(rec, d.seq, now)
  end
  local body = string.format('{"device_id":"%s","spool":"%s","sent_at":"%s","records":[%s],"dropped":0,' ..
                             '"agent_version":"bench"}', d.id, spool, now, table.concat(parts, ","))
  wrk.headers["Authorization"] = "Bearer " .. d.token
  return wrk.format(nil, nil, nil, body)
end
