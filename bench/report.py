#!/usr/bin/env python3
"""Parse wrk output and write the load benchmark's report (called by bench/run.sh).

    report.py parse-wrk ROUND VARIANT CPU_TICKS < wrk-output   -> one TSV row
    report.py report RESULTS.tsv CLK_TCK CRITERION_DIR OUT_DIR  -> markdown on stdout

OUT_DIR may hold variants.tsv (what each variant served) and logs.tsv (what each server
wrote to its log during the load), both written by run.sh.
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def micros(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(round_, variant, ticks):
    out = sys.stdin.read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = micros(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = micros(re.search(r"\s99%\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    print("\t".join(str(v) for v in [
        round_, variant, f"{rps:.1f}", f"{p50:.1f}", f"{p99:.1f}", requests, ticks,
        int(non2xx.group(1)) if non2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    ]))


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    wrk = (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0]
    return f"{os.cpu_count()} cores, {cpu}; Linux {platform.release()}; {rustc}; {wrk}"


def fmt_time(ns):
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns:.1f} ns"


def criterion_summary(root):
    rows = []
    for dirpath, _, files in sorted(os.walk(root)):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
            est = json.load(open(os.path.join(dirpath, "estimates.json")))
        except (OSError, ValueError):
            continue
        rows.append((bench.get("full_id") or bench.get("title"), est["median"]["point_estimate"]))
    return rows


POOLS = {
    "tokens": "{n:,} identities, RS256 + ES256",
    "rs256": "{n:,} identities, RS256",
    "apikeys": "{n:,} API keys",
    "none": "no credential",
}


def load_of(spec):
    if not spec:
        return "GET /items"
    pool = POOLS.get(spec["pool"], spec["pool"]).format(n=int(spec["identities"]))
    return f"GET {spec['path']}, {pool}"


def report(results, clk_tck, criterion, out_dir):
    clk_tck = int(clk_tck)
    rows = list(csv_rows(results))
    specs_path = os.path.join(out_dir, "variants.tsv")
    specs = {r["variant"]: r for r in csv_rows(specs_path)} if os.path.exists(specs_path) else {}
    logs_path = os.path.join(out_dir, "logs.tsv")
    logs = list(csv_rows(logs_path)) if os.path.exists(logs_path) else []
    order = []
    by = {}
    for r in rows:
        if r["variant"] not in by:
            order.append(r["variant"])
        by.setdefault(r["variant"], []).append(r)

    def med(v, key):
        return statistics.median(float(r[key]) for r in by[v])

    def cpu_us(v):
        return statistics.median(
            int(r["cpu_ticks"]) / clk_tck * 1e6 / max(int(r["requests"]), 1) for r in by[v])

    rounds = max(int(r["round"]) for r in rows)
    print("# Load benchmark report\n")
    print(f"Machine: {machine()}.\n")
    print(f"{rounds} rounds, variants interleaved (order rotated each round); medians over the "
          "rounds. Throughput and latency from wrk; server CPU time from /proc/<pid>/stat "
          "(user + system) divided by the requests served.\n")
    bare = "bare" in by and med("bare", "rps")
    peer = "peer" in by and med("peer", "rps")
    print("| variant | load | req/s | p50 | p99 | server CPU / req | × bare | × peer | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in order:
        rps = med(v, "rps")
        non2xx = sum(int(r["non2xx"]) + int(r["errors"]) for r in by[v])
        x_bare = f"{rps / bare:.2f}" if bare else "—"
        x_peer = f"{rps / peer:.2f}" if peer else "—"
        print(f"| `{v}` | {load_of(specs.get(v))} | {rps:,.0f} | {med(v, 'p50'):,.0f} µs | "
              f"{med(v, 'p99'):,.0f} µs | {cpu_us(v):.1f} µs | {x_bare} | {x_peer} | {non2xx} |")
    print()
    targets = [
        ("ours-jwt ≥ 0.85 × bare", "ours-jwt", "bare", 0.85),
        ("ours-jwt ≥ 2.5 × peer", "ours-jwt", "peer", 2.5),
        ("ours-jwt-nocache ≥ 1.0 × peer", "ours-jwt-nocache", "peer", 1.0),
        ("ours-apikey ≥ 0.90 × bare", "ours-apikey", "bare", 0.90),
        ("ours-redis ≥ 0.5 × bare", "ours-redis", "bare", 0.5),
        ("ours-redis-lease (opt-in leases) ≥ 0.5 × bare", "ours-redis-lease", "bare", 0.5),
    ]
    targets = [t for t in targets if t[1] in by and t[2] in by]
    if targets:
        print("Targets:\n")
    for name, a, b, want in targets:
        got = med(a, "rps") / med(b, "rps")
        # Three decimals: 0.849 must not read as a met 0.85.
        print(f"- {name}: {got:.3f} — {'met' if got >= want else 'MISSED'}")
    if "ours-jwt" in by and "peer" in by:
        a, b = med("ours-jwt", "p99"), med("peer", "p99")
        print(f"- ours-jwt p99 below the peer's: {a:,.0f} µs vs {b:,.0f} µs — "
              f"{'met' if a < b else 'MISSED'}")
    quickstart_targets(by, med, cpu_us, specs, clk_tck)
    log_volume(logs, by)
    print("\nPer round (req/s):\n")
    print("| variant | " + " | ".join(f"round {i}" for i in range(1, rounds + 1)) + " |")
    print("|---|" + "---:|" * rounds)
    for v in order:
        cells = {int(r["round"]): float(r["rps"]) for r in by[v]}
        print(f"| `{v}` | " + " | ".join(f"{cells.get(i, 0):,.0f}" for i in range(1, rounds + 1))
              + " |")
    if criterion and os.path.isdir(criterion):
        print("\n## Micro-benchmarks (criterion medians, same run)\n")
        print("| benchmark | median |")
        print("|---|---:|")
        for name, ns in criterion_summary(criterion):
            print(f"| `{name}` | {fmt_time(ns)} |")
        for log in ("criterion.log", "memory.log"):
            path = os.path.join(out_dir, log)
            if os.path.exists(path):
                extra = [l.strip() for l in open(path) if re.match(r"\s*(redis|memory)[:/]", l)]
                if extra:
                    print()
                    for line in extra:
                        print(f"- {line}")


def quickstart_targets(by, med, cpu_us, specs, clk_tck):
    """The release quickstart (qs-*) against its baselines on the same load."""
    if not any(v.startswith("qs-") for v in by):
        return
    settings = [f"{k}={os.environ[k]}" for k in ("QS_RUST_LOG", "QS_AUTH_FAILURE_LIMIT")
                if os.environ.get(k)]
    how = ("run as users run it" if not settings else
           "NOT as users run it: " + ", ".join(settings))
    print(f"\nThe release quickstart (`examples/quickstart.rs`, {how}):\n")

    def verdict(ok):
        return "met" if ok else "MISSED"

    if "qs-me" in by and "qs-health" in by:
        got = med("qs-me", "rps") / med("qs-health", "rps")
        print(f"- qs-me / qs-health throughput ≥ 0.90: {got:.3f} — {verdict(got >= 0.90)}")
    base = "bare-qs" if "bare-qs" in by else "bare" if "bare" in by else None
    if "qs-items" in by and base:
        extra = cpu_us("qs-items") - cpu_us(base)
        note = "" if base == "bare-qs" else " (`bare` serves another handler and load)"
        print(f"- qs-items server CPU / req − {base}'s ≤ 2.5 µs: {cpu_us('qs-items'):.2f} − "
              f"{cpu_us(base):.2f} = {extra:.2f} µs — {verdict(extra <= 2.5)}{note}")
    for peer in ("peer-qs", "peer"):
        if "qs-items" in by and peer in by:
            got = med("qs-items", "rps") / med(peer, "rps")
            a, b = med("qs-items", "p99"), med(peer, "p99")
            same = (specs.get(peer, {}).get("pool") == specs.get("qs-items", {}).get("pool")
                    if specs else peer == "peer-qs")
            result = verdict(got >= 2.7) if same else (
                "not the target's measure: the peer's load is another credential pool "
                "(run `peer-qs`)")
            print(f"- qs-items / {peer} throughput ≥ 2.7: {got:.3f} — {result}; "
                  f"p99 {a:,.0f} µs (qs-items) vs {b:,.0f} µs ({peer})")
    if "qs-doc" in by and "qs-items" in by:
        got = med("qs-doc", "rps") / med("qs-items", "rps")
        print(f"- qs-doc (Cedar policy) / qs-items (scope check) throughput ≥ 0.70: {got:.3f} — "
              f"{verdict(got >= 0.70)}")
    if "qs-cluster" in by and "qs-redis" in by:
        got = med("qs-cluster", "rps") / med("qs-redis", "rps")
        print(f"- qs-cluster (rate limit in a 3-master Redis Cluster) / qs-redis (one Redis "
              f"server) throughput ≥ 0.80: {got:.3f} — {verdict(got >= 0.80)}; server CPU / "
              f"req {cpu_us('qs-cluster'):.2f} µs vs {cpu_us('qs-redis'):.2f} µs")
    if "qs-items" in by:
        # The CPU time's resolution: one clock tick over the requests of one load.
        reqs = statistics.median(int(r["requests"]) for r in by["qs-items"])
        print(f"- (server CPU comes in clock ticks: one tick is {1e6 / clk_tck / reqs:.2f} µs "
              "per request over one load of qs-items)")


def log_volume(logs, by):
    rows = [r for r in logs if int(r["log_lines"]) > 0 and r["variant"] in by]
    if not rows:
        return
    print("\nServer log written during the load (the quickstart logs at its default level):\n")
    print("| variant | lines / req | bytes / req |")
    print("|---|---:|---:|")
    for v in dict.fromkeys(r["variant"] for r in rows):
        reqs = {r["round"]: int(r["requests"]) for r in by[v]}
        mine = [r for r in rows if r["variant"] == v]
        lines = statistics.median(int(r["log_lines"]) / max(reqs[r["round"]], 1) for r in mine)
        size = statistics.median(int(r["log_bytes"]) / max(reqs[r["round"]], 1) for r in mine)
        print(f"| `{v}` | {lines:.2f} | {size:,.0f} |")


def csv_rows(path):
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            if line.strip():
                yield dict(zip(header, line.rstrip("\n").split("\t")))


if __name__ == "__main__":
    if sys.argv[1] == "parse-wrk":
        parse_wrk(*sys.argv[2:5])
    elif sys.argv[1] == "report":
        report(*sys.argv[2:6])
    else:
        sys.exit(__doc__)
