#!/usr/bin/env bash
# The main job, on a fresh machine: local services up, schema migrated, `botmeter run` and
# `botmeter serve` started in the background, a seeded fleet simulated onto fresh topics, and a
# usage summary read back from the HTTP API and checked against the simulator's ground truth.
#
#   scripts/demo.sh          run it (leaves the pipeline and the API running)
#   scripts/demo.sh stop     stop the pipeline and the API it started (services stay up)
#
# Knobs (environment): BOTMETER_DEMO_EVENTS (traffic events, default 20000), BOTMETER_DEMO_SEED (7),
# BOTMETER_LISTEN (127.0.0.1:8080), plus the BOTMETER_* variables of scripts/services.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
DEMO_DIR=$ROOT/.services/demo
mkdir -p "$DEMO_DIR"
say() { printf 'demo: %s\n' "$*" >&2; }

stop_demo() {
    for name in run serve; do
        if [[ -s $DEMO_DIR/$name.pid ]] && kill -0 "$(<"$DEMO_DIR/$name.pid")" 2>/dev/null; then
            kill -TERM "$(<"$DEMO_DIR/$name.pid")" && say "stopped botmeter $name"
        fi
        rm -f "$DEMO_DIR/$name.pid"
    done
}

if [[ ${1:-} == stop ]]; then
    stop_demo
    exit 0
fi

EVENTS=${BOTMETER_DEMO_EVENTS:-20000}
SEED=${BOTMETER_DEMO_SEED:-7}
LISTEN=${BOTMETER_LISTEN:-127.0.0.1:8080}

say "starting local services (ClickHouse, Kafka) if needed"
scripts/services.sh up
eval "$(scripts/services.sh env)"

say "building botmeter (release)"
scripts/build-deps.sh
cargo build --release --quiet --bin botmeter
BIN=$ROOT/target/release/botmeter

stop_demo
# Fresh topics and database per demo run, so the summary is this run's alone.
RUN_ID=$(date +%Y%m%d%H%M%S)
export BOTMETER_CLICKHOUSE_DATABASE=botmeter_demo
export BOTMETER_CONTROL_TOPIC=demo.$RUN_ID.control
export BOTMETER_TRAFFIC_TOPIC=demo.$RUN_ID.traffic
export BOTMETER_DEAD_LETTER_TOPIC=demo.$RUN_ID.dead-letter
export BOTMETER_GROUP_ID=botmeter-demo-$RUN_ID
curl -sS --fail "$BOTMETER_CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS $BOTMETER_CLICKHOUSE_DATABASE" >/dev/null

say "migrating ClickHouse"
"$BIN" migrate

say "starting botmeter run and botmeter serve (logs in .services/demo/)"
"$BIN" run >"$DEMO_DIR/run.log" 2>&1 &
echo $! >"$DEMO_DIR/run.pid"
"$BIN" serve --listen "$LISTEN" >"$DEMO_DIR/serve.log" 2>&1 &
echo $! >"$DEMO_DIR/serve.pid"

say "simulating a fleet: $EVENTS traffic events, seed $SEED"
"$BIN" simulate --seed "$SEED" --traffic-events "$EVENTS" --truth-file "$DEMO_DIR/truth.json"

say "waiting for every traffic event to be attributed and written"
expected=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["traffic_events"])' "$DEMO_DIR/truth.json")
for _ in $(seq 1 240); do
    got=$(curl -sS "$BOTMETER_CLICKHOUSE_URL/" --data-binary \
        "SELECT count() FROM $BOTMETER_CLICKHOUSE_DATABASE.usage_events WHERE status != 'dead_letter'" 2>/dev/null || echo 0)
    printf '\r  %s / %s rows' "$got" "$expected" >&2
    [[ $got == "$expected" ]] && break
    kill -0 "$(<"$DEMO_DIR/run.pid")" 2>/dev/null || { echo >&2; tail -20 "$DEMO_DIR/run.log" >&2; exit 1; }
    sleep 0.5
done
echo >&2
[[ $got == "$expected" ]] || { say "timed out: $got of $expected rows; see $DEMO_DIR/run.log"; exit 1; }

python3 - "$DEMO_DIR/truth.json" "http://$LISTEN" <<'PY'
import json, sys, urllib.request
truth = json.load(open(sys.argv[1]))
base = sys.argv[2]
start, end = truth["window_start"], truth["window_end"]
rows, mismatches = [], 0
for owner_id, owner in sorted(truth["owners"].items(), key=lambda kv: -kv[1]["bytes_out"]):
    url = f"{base}/v1/owners/{owner_id}/usage?from={start}&to={end}"
    api = json.load(urllib.request.urlopen(url))["totals"]
    want = owner
    ok = all(api[k] == want[k] for k in ("bytes_in", "bytes_out", "http_requests", "tcp_connections"))
    mismatches += not ok
    rows.append((owner_id, owner["owner_kind"], api["bytes_in"], api["bytes_out"], api["http_requests"], api["tcp_connections"], "yes" if ok else "NO"))
print(f"\nUsage per owner, {start} .. {end}, read back from {base} (ground truth agrees?):\n")
print(f"{'owner':<32} {'kind':<9} {'bytes in':>14} {'bytes out':>14} {'requests':>9} {'conns':>7}  truth")
for r in rows:
    print(f"{r[0]:<32} {r[1]:<9} {r[2]:>14,} {r[3]:>14,} {r[4]:>9,} {r[5]:>7,}  {r[6]}")
first = rows[0][0]
print(f"\nTry it:  curl '{base}/v1/owners/{first}/usage?from={start}&to={end}'")
print(f"Stop:    scripts/demo.sh stop")
sys.exit(1 if mismatches else 0)
PY
