-- wrk script: POST the JSON body stored in the file named by $BENCH_BODY, then print one machine-readable
-- line of results (latencies in microseconds) for bench/run_bench.py to parse.
local path = os.getenv("BENCH_BODY")
local file = assert(io.open(path, "rb"), "cannot open BENCH_BODY=" .. tostring(path))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
-- Extra headers, "Name: value" pairs separated by "|" (an API key, the binary extension's header length).
for pair in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
  local name, value = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
