-- wrk script: POST real CLINC150 queries, one random query per request, and print a JSON summary.
-- usage: wrk -s bench/clinc_queries.lua URL -- QUERIES_FILE FORMAT
--   QUERIES_FILE: one query per line (plain text, no quotes or backslashes needed: they are escaped here)
--   FORMAT: "router" -> {"text": ..., "user_id": ...} for /route; "mlflow" -> {"dataframe_records": [...]}

local queries = {}
local format = "router"
local counter = 0

local function escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'))
end

function init(args)
  local path = args[1]
  format = args[2] or "router"
  for line in io.lines(path) do
    if #line > 0 then
      queries[#queries + 1] = escape(line)
    end
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 1000)
end

function request()
  counter = counter + 1
  local q = queries[math.random(#queries)]
  local body
  if format == "mlflow" then
    body = '{"dataframe_records": [{"text": "' .. q .. '"}]}'
  else
    body = '{"text": "' .. q .. '", "user_id": "bench-' .. (counter % 1000) .. '"}'
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
