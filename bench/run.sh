#!/usr/bin/env bash
# The side-by-side load benchmark (BENCHMARKS.md): builds the servers in release mode,
# starts a local issuer, and loads each variant in turn with wrk over loopback, in
# several rounds with the order rotated so that machine drift cancels out. Then a
# criterion summary of the micro-benchmarks, and one report:
#   target/bench-results/report.md
#
# Settings (environment): ROUNDS (3), DURATION seconds per load (10), WARMUP seconds (2),
# CONNECTIONS (32), THREADS (1), VARIANTS (the thirteen below), MICRO=0 to skip the criterion
# part, REDIS_URL (redis://127.0.0.1:6379; started here when not running).
#
# Variants (server, path, credential pool; see variant_spec below):
#   bare ours-jwt ours-jwt-nocache ours-apikey ours-redis ours-redis-lease peer
#       guard-bench / the peer on GET /items, the 1,000 identities (RS256 and ES256)
#   qs-health qs-me qs-items qs-doc
#       the release quickstart itself (examples/quickstart.rs, as users build it) on
#       GET /health (no credential), GET /me, GET /items (a scope check) and
#       GET /documents/1 (its default Cedar policy; the pool's role auditor may read)
#       (200 identities, RS256)
#   qs-redis qs-cluster
#       the release quickstart on GET /items with its rate limit in Redis: one server
#       (REDIS_URL) and a 3-master Redis Cluster on 7000-7002 (GUARD_REDIS_CLUSTER;
#       started here, fresh, when qs-cluster is asked for)
#   bare-qs peer-qs
#       their baselines on the same load: the quickstart's list_items with no middleware,
#       and the peer, GET /items with the same 200 RS256 tokens
# The quickstart runs with its own defaults (logging included: RUST_LOG is unset for it;
# QS_RUST_LOG sets it) except GUARD_RATE (QS_RATE, 1000000/s: never limits) and, when set,
# GUARD_AUTH_FAILURE_LIMIT (QS_AUTH_FAILURE_LIMIT). REDIS_URL is not passed to it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ALL="bare ours-jwt ours-jwt-nocache ours-apikey ours-redis ours-redis-lease peer"
ALL+=" bare-qs qs-health qs-me qs-items qs-doc qs-redis qs-cluster peer-qs"
VARIANTS=${VARIANTS:-$ALL}
MICRO=${MICRO:-1}
QS_RATE=${QS_RATE:-1000000/s}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
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

# Redis, for the ours-redis and qs-redis variants; a fresh cluster for qs-cluster.
if [[ " $VARIANTS " == *" qs-cluster "* ]]; then
    say "starting a 3-master redis cluster on 7000-7002"
    source "$ROOT/.ci/redis-cluster.sh"
    start_redis_cluster
fi
if [[ " $VARIANTS " == *" ours-redis"* || " $VARIANTS " == *" qs-redis "* ]] && ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
    say "starting redis-server"
    redis-server --port "${REDIS_URL##*:}" --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 50); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

say "building (release)"
cargo build --release -q -p guard-bench -p guard-bench-peer
if [[ " $VARIANTS " == *" qs-"* ]]; then
    # Exactly as a user builds it (the root package, its dev-dependencies and features).
    cargo build --release -q --example quickstart
fi
BIN=$TARGET/release

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
variant_spec() { # variant -> "server path pool"
    case $1 in
        bare | ours-jwt | ours-jwt-nocache | ours-redis | ours-redis-lease) echo "bench /items tokens" ;;
        ours-apikey) echo "bench /items apikeys" ;;
        peer) echo "peer /items tokens" ;;
        peer-qs) echo "peer /items rs256" ;;
        bare-qs) echo "bench /items rs256" ;;
        qs-health) echo "quickstart /health none" ;;
        qs-me) echo "quickstart /me rs256" ;;
        qs-items) echo "quickstart /items rs256" ;;
        qs-doc) echo "quickstart /documents/1 rs256" ;;
        qs-redis | qs-cluster) echo "quickstart /items rs256" ;;
        *) say "unknown variant $1"; return 1 ;;
    esac
}

start_server() { # variant server -> sets SERVER_PID
    local v=$1 server=$2 log=$OUT/server-$1.log
    case $server in
        peer)
            BIND=127.0.0.1:$PORT JWKS_URL=$(cat "$WORK/jwks_url") ISSUER=$(cat "$WORK/issuer") \
                AUDIENCE=$(cat "$WORK/audience") "$BIN/peer-server" >"$log" 2>&1 &
            ;;
        quickstart)
            # As users run it: its own logging and defaults, a real issuer, no Redis (but
            # for qs-redis and qs-cluster).
            local shared=()
            case $v in
                qs-redis) shared=("REDIS_URL=$REDIS_URL") ;;
                qs-cluster) shared=("GUARD_REDIS_CLUSTER=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002") ;;
            esac
            env -u REDIS_URL -u RUST_LOG -u GUARD_JWKS_FILE -u GUARD_AUTH_FAILURE_LIMIT \
                -u GUARD_REDIS_CLUSTER ${shared[@]+"${shared[@]}"} \
                ${QS_RUST_LOG:+"RUST_LOG=$QS_RUST_LOG"} \
                ${QS_AUTH_FAILURE_LIMIT:+"GUARD_AUTH_FAILURE_LIMIT=$QS_AUTH_FAILURE_LIMIT"} \
                GUARD_ADDR="127.0.0.1:$PORT" GUARD_ISSUER="$(cat "$WORK/issuer")" \
                GUARD_AUDIENCE="$(cat "$WORK/audience")" GUARD_JWKS_URL="$(cat "$WORK/jwks_url")" \
                GUARD_RATE="$QS_RATE" "$BIN/examples/quickstart" >"$log" 2>&1 &
            ;;
        *) "$BIN/guard-bench" server "$v" "$WORK" "127.0.0.1:$PORT" >"$log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 100); do
        if [ "$server" = quickstart ]; then
            # It prints no "listening" line: ready once it answers on its port.
            curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health" && return 0
        else
            grep -q listening "$log" 2>/dev/null && return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log"; return 1
}

creds_for() { # pool -> BENCH_* environment for wrk.lua
    case $1 in
        apikeys) export BENCH_CREDS=$WORK/apikeys.txt BENCH_HEADER=X-API-Key BENCH_PREFIX= ;;
        tokens) export BENCH_CREDS=$WORK/tokens.txt BENCH_HEADER=Authorization BENCH_PREFIX="Bearer " ;;
        rs256) export BENCH_CREDS=$WORK/tokens-rs256.txt BENCH_HEADER=Authorization BENCH_PREFIX="Bearer " ;;
        none) export BENCH_CREDS= BENCH_HEADER= BENCH_PREFIX= ;;
    esac
}

log_size() { # file -> "lines bytes"
    echo "$(wc -l <"$1") $(stat -c %s "$1")"
}

cpu_ticks() { # pid -> utime + stime, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

RESULTS=$OUT/results.tsv
printf 'round\tvariant\trps\tp50\tp99\trequests\tcpu_ticks\tnon2xx\terrors\n' >"$RESULTS"
# What each variant served, and what its server wrote to its log during the load.
printf 'variant\tserver\tpath\tpool\tidentities\n' >"$OUT/variants.tsv"
printf 'round\tvariant\tlog_lines\tlog_bytes\n' >"$OUT/logs.tsv"
read -r -a LIST <<<"$VARIANTS"
N=${#LIST[@]}
for v in "${LIST[@]}"; do
    spec=$(variant_spec "$v") || exit 1
    read -r server path pool <<<"$spec"
    creds_for "$pool"
    ids=0; [ -z "$BENCH_CREDS" ] || ids=$(grep -c . "$BENCH_CREDS")
    printf '%s\t%s\t%s\t%s\t%s\n' "$v" "$server" "$path" "$pool" "$ids" >>"$OUT/variants.tsv"
done
for round in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((N - 1))); do
        v=${LIST[$(((k + round - 1) % N))]}
        read -r server path pool <<<"$(variant_spec "$v")"
        say "round $round/$ROUNDS: $v (GET $path)"
        start_server "$v" "$server"
        creds_for "$pool"
        url=http://127.0.0.1:$PORT$path
        log=$OUT/server-$v.log
        # Every variant must answer 200 to the pool's credentials before it is measured.
        auth=()
        [ -z "$BENCH_CREDS" ] || auth=(-H "$BENCH_HEADER: $BENCH_PREFIX$(head -1 "$BENCH_CREDS")")
        code=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$url")
        [ "$code" = 200 ] || { say "$v answered $code, not 200"; cat "$log"; exit 1; }
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/wrk.lua "$url" >/dev/null
        read -r lines0 bytes0 <<<"$(log_size "$log")"
        before=$(cpu_ticks "$SERVER_PID")
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/wrk.lua \
            "$url" >"$OUT/wrk-$v-$round.txt"
        after=$(cpu_ticks "$SERVER_PID")
        read -r lines1 bytes1 <<<"$(log_size "$log")"
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        python3 bench/report.py parse-wrk "$round" "$v" "$((after - before))" \
            <"$OUT/wrk-$v-$round.txt" >>"$RESULTS"
        printf '%s\t%s\t%s\t%s\n' "$round" "$v" "$((lines1 - lines0))" "$((bytes1 - bytes0))" \
            >>"$OUT/logs.tsv"
        # A per-request log grows by tens of MB a load: keep its start and its end.
        if [ "$bytes1" -gt 1000000 ]; then
            { head -n 100 "$log"; echo "[... $((lines1 - 200)) lines cut by run.sh ...]"
              tail -n 100 "$log"; } >"$log.cut"
            mv "$log.cut" "$log"
        fi
    done
done

CRITERION=
if [ "$MICRO" = 1 ]; then
    say "criterion micro-benchmarks (short runs)"
    cargo bench -q --bench guard -- --warm-up-time 1 --measurement-time 3 \
        >"$OUT/criterion.log" 2>&1 || say "criterion failed; see $OUT/criterion.log"
    cargo bench -q --bench memory >"$OUT/memory.log" 2>&1 || true
    CRITERION=$TARGET/criterion
fi

python3 bench/report.py report "$RESULTS" "$(getconf CLK_TCK)" "$CRITERION" "$OUT" \
    >"$OUT/report.md"
cat "$OUT/report.md"
