#!/usr/bin/env bash
# Every performance target, measured on this machine by one command: starts the services (as the
# tests do), runs each bench harness in turn and prints one table of every target with its
# figure, its bar, the ratio and the verdict — the table BENCHMARKS.md records.
#
#   scripts/bench.sh                 # everything, about 25 minutes on 2 cores
#   BOTMETER_BENCH_REPORT_ROWS=10000000 scripts/bench.sh    # reports over 10M rows: quicker
#
# The harnesses, each also runnable alone (see its header for its settings):
#   pipeline   cargo bench --bench pipeline        end to end, CPU, bare insert, RSS (3 runs)
#   scale-out  the same with 2 and 3 instances     exact totals, throughput per instance
#   freshness  cargo bench --bench freshness       at half the median end-to-end rate just measured
#   reports    cargo bench --bench reports         per-owner month and top-N over 100M events
#   fleet      cargo bench --bench fleet           /v1/fleet over 100k credentials
#   state      cargo bench -p botmeter-enrich --bench state_memory_mimalloc   RSS, 1M sessions
#   receive    cargo bench --bench receive         Firehose → receive → Kafka vs bare produce, RSS
# Full outputs go to target/bench/<harness>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'bench.sh: %s\n' "$*" >&2; }

scripts/services.sh up
eval "$(scripts/services.sh env)"
out=target/bench
mkdir -p "$out"

log "building the harnesses (release)"
cargo bench --workspace --no-run >"$out/build.log" 2>&1 || {
    tail -30 "$out/build.log" >&2
    exit 1
}

# run NAME COMMAND...: runs one harness with its output in target/bench/NAME.log and its target
# lines on stdout; a harness that fails stops the script (its log says why).
run() {
    local name=$1
    shift
    log "$name: $*"
    local started=$SECONDS
    if ! "$@" >"$out/$name.log" 2>&1; then
        log "$name failed; the end of target/bench/$name.log:"
        tail -30 "$out/$name.log" >&2
        exit 1
    fi
    log "$name: done in $((SECONDS - started)) s"
    grep -E '^target \|' "$out/$name.log" || true
}

{
    run pipeline env BOTMETER_BENCH_RUNS="${BOTMETER_BENCH_RUNS:-3}" \
        cargo bench --bench pipeline
    rate=$(awk '/^median end to end/ { print $5 }' "$out/pipeline.log")
    run scale-out-2 env BOTMETER_BENCH_INSTANCES=2 BOTMETER_BENCH_PARTITIONS=6 \
        BOTMETER_BENCH_EVENTS=2000000 cargo bench --bench pipeline
    run scale-out-3 env BOTMETER_BENCH_INSTANCES=3 BOTMETER_BENCH_PARTITIONS=6 \
        BOTMETER_BENCH_EVENTS=2000000 cargo bench --bench pipeline
    # The scale-out runs' dropped databases age out first (see quiet_period in benches/pipeline.rs).
    sleep "${BOTMETER_BENCH_QUIET_SECS:-65}"
    run freshness env BOTMETER_BENCH_FRESHNESS_RATE="$((rate / 2))" \
        cargo bench --bench freshness
    run reports cargo bench --bench reports
    run fleet cargo bench --bench fleet
    run state cargo bench -p botmeter-enrich --bench state_memory_mimalloc
    run receive cargo bench --bench receive
} >"$out/targets.txt"

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| target | measured | bar | ratio | verdict |"
echo "| --- | ---: | ---: | ---: | --- |"
sed -E 's/^target \| //; s/^/| /; s/$/ |/' "$out/targets.txt"
