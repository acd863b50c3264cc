-- wrk script: cycle through pre-signed Stripe deliveries ("<Stripe-Signature>\t<body>" per line),
-- each thread taking every n-th line, and count the gateway's answers by kind.
-- Usage: wrk -s post.lua URL -- <requests file> <threads>
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  sigs, bodies = {}, {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      sigs[#sigs + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    i = i + 1
  end
  pos, wrapped = 0, 0
  accepted, duplicate, other_2xx, non_2xx = 0, 0, 0, 0
end

function request()
  pos = pos + 1
  if pos > #bodies then
    pos = 1
    wrapped = wrapped + 1
  end
  local headers = { ["Content-Type"] = "application/json", ["Stripe-Signature"] = sigs[pos] }
  return wrk.format("POST", nil, headers, bodies[pos])
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    if body:find('"accepted"', 1, true) then
      accepted = accepted + 1
    elseif body:find('"duplicate"', 1, true) then
      duplicate = duplicate + 1
    else
      other_2xx = other_2xx + 1
    end
  else
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency, requests)
  local a, d, o, n, w = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    d = d + t:get("duplicate")
    o = o + t:get("other_2xx")
    n = n + t:get("non_2xx")
    w = w + t:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"accepted":%d,"duplicate":%d,"other_2xx":%d,' ..
    '"non_2xx":%d,"wrapped":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, a, d, o, n, w,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
