-- wrk script of `scripts/bench.sh ingest`: every request posts new events (ids unique per wrk
-- thread and request) for one of the benchmark's tenants, with that tenant's own API key.
--   FLUXGATE_BENCH_KEYS=tenant-0=fgk_…,tenant-1=fgk_…   the tenants and their keys
--   FLUXGATE_BENCH_EVENTS_PER_REQUEST=1 | 500           POST /v1/events | /v1/events/batch
local tenants = {}
for pair in string.gmatch(os.getenv("FLUXGATE_BENCH_KEYS") or "", "[^,]+") do
  local tenant, key = pair:match("^([^=]+)=(.+)$")
  tenants[#tenants + 1] = { tenant = tenant, auth = "Bearer " .. key }
end
assert(#tenants > 0, "FLUXGATE_BENCH_KEYS names no tenant")
local per_request = tonumber(os.getenv("FLUXGATE_BENCH_EVENTS_PER_REQUEST") or "1")
local path = per_request == 1 and "/v1/events" or "/v1/events/batch"

-- Set per thread by setup(); a global, so thread:set reaches it.
thread_id = 0
local threads = 0
local sent = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

local function event(tenant, id, n)
  return string.format(
    '{"tenantId":"%s","eventId":"%s","eventType":"page.viewed",'
      .. '"payload":{"path":"/pricing","userId":%d,"ms":123.4,"tags":["a","b"]}}',
    tenant, id, n)
end

function request()
  sent = sent + 1
  local t = tenants[(sent % #tenants) + 1]
  local prefix = "w" .. thread_id .. "-" .. sent
  local body
  if per_request == 1 then
    body = event(t.tenant, prefix, sent)
  else
    local items = {}
    for i = 1, per_request do
      items[i] = event(t.tenant, prefix .. "-" .. i, i)
    end
    body = "[" .. table.concat(items, ",") .. "]"
  end
  return wrk.format("POST", path,
    { ["Content-Type"] = "application/json", ["Authorization"] = t.auth }, body)
end
