#!/usr/bin/env bash
# Repeatable per-request costs of the load benchmark's servers (BENCHMARKS.md): runs one
# variant under valgrind's callgrind with a simulated cache, loads it with wrk, and prints
# per request the instructions, L1 misses and "LL" misses (a 1 MiB last level, the size of
# this machine's L2, so that the misses are the trips to L3 and beyond), plus a cost proxy
# Ir + 10 x L1 misses + 50 x LL misses. Unlike wall time, these counts do not move with what
# else the machine runs, so two builds can be compared a few hundred instructions apart.
#
#   bench/callgrind.sh [variant ...]       # default: bare ours-jwt ours-apikey
#
# Settings (environment): SECONDS_MEASURED (10), WARMUP seconds (20, uninstrumented: every
# pooled credential must be seen once, so that caches are warm), OUT (target/callgrind),
# GUARD_BENCH (a guard-bench binary built elsewhere, e.g. from an older commit's worktree,
# to compare; default: build this checkout's).
# The per-function tables land in $OUT/<variant>.txt (callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MEASURED=${SECONDS_MEASURED:-10}
WARMUP=${WARMUP:-20}
OUT=${OUT:-$ROOT/target/callgrind}
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(bare ours-jwt ours-apikey)
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
mkdir -p "$OUT"
WORK=$OUT/issuer
rm -rf "$WORK"

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
for tool in wrk valgrind; do
    if ! command -v $tool >/dev/null; then
        $SUDO apt-get install -y -q $tool >/dev/null 2>&1 ||
            { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q $tool >/dev/null; }
    fi
done

if [ -z "${GUARD_BENCH:-}" ]; then
    cargo build --release -q -p guard-bench
fi
BIN=${GUARD_BENCH:-$ROOT/target/release/guard-bench}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$BIN" issuer "$WORK" >"$OUT/issuer.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [ -f "$WORK/jwks_url" ] && break; sleep 0.1; done

PORT=${PORT:-3292}
for v in "${VARIANTS[@]}"; do
    rm -f "$OUT"/cg.out.*
    valgrind --tool=callgrind --instr-atstart=no --cache-sim=yes --LL=1048576,16,64 \
        --callgrind-out-file="$OUT/cg.out.%p" \
        "$BIN" server "$v" "$WORK" "127.0.0.1:$PORT" >"$OUT/server-$v.log" 2>&1 &
    pid=$!
    PIDS+=($pid)
    for _ in $(seq 600); do grep -q listening "$OUT/server-$v.log" && break; sleep 0.1; done
    if [ "$v" = ours-apikey ]; then
        export BENCH_CREDS=$WORK/apikeys.txt BENCH_HEADER=X-API-Key BENCH_PREFIX=
    else
        export BENCH_CREDS=$WORK/tokens.txt BENCH_HEADER=Authorization BENCH_PREFIX="Bearer "
    fi
    wrk -t1 -c8 -d"${WARMUP}s" -s bench/wrk.lua "http://127.0.0.1:$PORT/items" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    requests=$(wrk -t1 -c8 -d"${MEASURED}s" -s bench/wrk.lua "http://127.0.0.1:$PORT/items" |
        awk '/requests in/ { print $1 }')
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    dump=$(ls "$OUT"/cg.out.*.1)
    callgrind_annotate --inclusive=no --show=Ir,I1mr,D1mr,DLmr --threshold=100 "$dump" \
        >"$OUT/$v.txt" 2>/dev/null
    python3 - "$dump" "$requests" "$v" <<'PY'
import sys
dump, requests, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for line in open(dump):
    if line.startswith(("summary:", "totals:")):
        events = dict(zip("Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw".split(),
                          map(int, line.split()[1:])))
        break
ir = events["Ir"] / requests
l1 = (events["I1mr"] + events["D1mr"] + events["D1mw"]) / requests
ll = (events["ILmr"] + events["DLmr"] + events["DLmw"]) / requests
print(f"{variant:18} {requests:7d} requests  {ir:8.0f} Ir  {l1:7.1f} L1 misses  "
      f"{ll:5.1f} LL misses  cost {ir + 10 * l1 + 50 * ll:8.0f} per request")
PY
done
