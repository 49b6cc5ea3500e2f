#!/usr/bin/env bash
# The side-by-side load benchmark (BENCHMARKS.md): builds the servers in release mode,
# starts a local issuer, and loads each variant in turn with wrk over loopback, in
# several rounds with the order rotated so that machine drift cancels out. Then a
# criterion summary of the micro-benchmarks, and one report:
#   target/bench-results/report.md
#
# Settings (environment): ROUNDS (3), DURATION seconds per load (10), WARMUP seconds (2),
# CONNECTIONS (32), THREADS (1), VARIANTS (all seven), MICRO=0 to skip the criterion part,
# REDIS_URL (redis://127.0.0.1:6379; started here when not running).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
VARIANTS=${VARIANTS:-"bare ours-jwt ours-jwt-nocache ours-apikey ours-redis ours-redis-lease peer"}
MICRO=${MICRO:-1}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
OUT=$ROOT/target/bench-results
WORK=$OUT/issuer
mkdir -p "$OUT"
rm -rf "$WORK"

say() { printf '== %s\n' "$*" >&2; }

# wrk, from Debian's packages.
if ! command -v wrk >/dev/null; then
    say "installing wrk"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y -q wrk >/dev/null 2>&1 ||
        { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q wrk >/dev/null; }
fi

# Redis, for the ours-redis variants.
if [[ " $VARIANTS " == *" ours-redis"* ]] && ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
    say "starting redis-server"
    redis-server --port "${REDIS_URL##*:}" --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 50); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

say "building (release)"
cargo build --release -q -p guard-bench -p guard-bench-peer
BIN=$ROOT/target/release

PIDS=()
SERVER_PID=
cleanup() { for p in "${PIDS[@]}" $SERVER_PID; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

say "starting the issuer (1,000 identities, RS256 and ES256; 1,000 API keys)"
"$BIN/guard-bench" issuer "$WORK" >"$OUT/issuer.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [ -f "$WORK/jwks_url" ] && break; sleep 0.1; done
[ -f "$WORK/jwks_url" ] || { cat "$OUT/issuer.log"; exit 1; }

PORT=${PORT:-3190}
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    say "port $PORT is taken; set PORT"; exit 1
fi
start_server() { # variant -> sets SERVER_PID
    local v=$1 log=$OUT/server-$1.log
    if [ "$v" = peer ]; then
        BIND=127.0.0.1:$PORT JWKS_URL=$(cat "$WORK/jwks_url") ISSUER=$(cat "$WORK/issuer") \
            AUDIENCE=$(cat "$WORK/audience") "$BIN/peer-server" >"$log" 2>&1 &
    else
        "$BIN/guard-bench" server "$v" "$WORK" "127.0.0.1:$PORT" >"$log" 2>&1 &
    fi
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q listening "$log" 2>/dev/null && return 0; sleep 0.1; done
    cat "$log"; return 1
}

creds_for() { # variant -> BENCH_* environment for wrk.lua
    if [ "$1" = ours-apikey ]; then
        export BENCH_CREDS=$WORK/apikeys.txt BENCH_HEADER=X-API-Key BENCH_PREFIX=
    else
        export BENCH_CREDS=$WORK/tokens.txt BENCH_HEADER=Authorization BENCH_PREFIX="Bearer "
    fi
}

cpu_ticks() { # pid -> utime + stime, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

RESULTS=$OUT/results.tsv
printf 'round\tvariant\trps\tp50\tp99\trequests\tcpu_ticks\tnon2xx\terrors\n' >"$RESULTS"
read -r -a LIST <<<"$VARIANTS"
N=${#LIST[@]}
for round in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((N - 1))); do
        v=${LIST[$(((k + round - 1) % N))]}
        say "round $round/$ROUNDS: $v"
        start_server "$v"
        creds_for "$v"
        # Every variant must answer 200 to the pool's credentials before it is measured.
        first=$(head -1 "$BENCH_CREDS")
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "$BENCH_HEADER: $BENCH_PREFIX$first" \
            "http://127.0.0.1:$PORT/items")
        [ "$code" = 200 ] || { say "$v answered $code, not 200"; cat "$OUT/server-$v.log"; exit 1; }
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/wrk.lua \
            "http://127.0.0.1:$PORT/items" >/dev/null
        before=$(cpu_ticks "$SERVER_PID")
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/wrk.lua \
            "http://127.0.0.1:$PORT/items" >"$OUT/wrk-$v-$round.txt"
        after=$(cpu_ticks "$SERVER_PID")
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        python3 bench/report.py parse-wrk "$round" "$v" "$((after - before))" \
            <"$OUT/wrk-$v-$round.txt" >>"$RESULTS"
    done
done

CRITERION=
if [ "$MICRO" = 1 ]; then
    say "criterion micro-benchmarks (short runs)"
    cargo bench -q --bench guard -- --warm-up-time 1 --measurement-time 3 \
        >"$OUT/criterion.log" 2>&1 || say "criterion failed; see $OUT/criterion.log"
    cargo bench -q --bench memory >"$OUT/memory.log" 2>&1 || true
    CRITERION=$ROOT/target/criterion
fi

python3 bench/report.py report "$RESULTS" "$(getconf CLK_TCK)" "$CRITERION" "$OUT" \
    >"$OUT/report.md"
cat "$OUT/report.md"
