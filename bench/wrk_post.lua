-- wrk script for the gptload benchmark: POST a small generateContent body, optionally stop after
-- BENCH_MAX_REQUESTS responses per wrk thread, print a JSON summary line in done().
-- summary.errors.status counts answers with status > 399.
-- env: BENCH_API_KEY (x-goog-api-key header, optional), BENCH_MAX_REQUESTS (per thread, 0 = no cap)
wrk.method = "POST"
wrk.body = '{"contents":[{"role":"user","parts":[{"text":"Say hello in five words."}]}]}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then wrk.headers["x-goog-api-key"] = key end
local cap = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0") or 0

-- response() is defined only when capping: wrk then parses every answer for it, which costs wrk CPU.
if cap > 0 then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen >= cap then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
