-- Each request carries the next credential of the pool (one per identity), in the header
-- the variant reads. Set by bench/run.sh: BENCH_CREDS (a file, one per line),
-- BENCH_HEADER ("Authorization" or "X-API-Key"), BENCH_PREFIX ("Bearer " or "").
local creds = {}
local header = os.getenv("BENCH_HEADER")
local prefix = os.getenv("BENCH_PREFIX") or ""
local i = 0

function init(args)
  for line in io.lines(os.getenv("BENCH_CREDS")) do
    if #line > 0 then creds[#creds + 1] = prefix .. line end
  end
  i = math.random(#creds)
end

function request()
  i = i % #creds + 1
  return wrk.format("GET", "/items", { [header] = creds[i] })
end
