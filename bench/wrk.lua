-- Each request carries the next credential of the pool (one per identity), in the header
-- the variant reads. Set by bench/run.sh: BENCH_CREDS (a file, one per line),
-- BENCH_HEADER ("Authorization" or "X-API-Key"), BENCH_PREFIX ("Bearer " or "").
-- With BENCH_CREDS unset or empty, requests carry no credential (`qs-health`).
-- The path is the one of the URL given to wrk.
local creds = {}
local header = os.getenv("BENCH_HEADER")
local prefix = os.getenv("BENCH_PREFIX") or ""
local file = os.getenv("BENCH_CREDS")
local i = 0

function init(args)
  if file == nil or file == "" then return end
  for line in io.lines(file) do
    if #line > 0 then creds[#creds + 1] = prefix .. line end
  end
  i = math.random(#creds)
end

function request()
  if #creds == 0 then
    -- Formatted per request all the same, so that wrk spends alike on every variant.
    return wrk.format("GET", wrk.path)
  end
  i = i % #creds + 1
  return wrk.format("GET", wrk.path, { [header] = creds[i] })
end
