#!/usr/bin/env bash
# The whole test suite, from a fresh machine: start ClickHouse and Kafka (tansu), install the Python
# test packages, then run the Rust tests and tests/python. Runs every suite even if one fails, and
# exits non-zero if any did. CI runs it through .ci/run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test.sh: %s\n' "$*" >&2; }

failed=()

# A suite that fails is recorded, not fatal, so the next one still runs.
suite() {
    local name=$1 started=$SECONDS rc=0
    shift
    if [[ $(type -t "$1") == function ]]; then log "$name"; else log "$name: $*"; fi
    "$@" || rc=$?
    if ((rc == 0)); then
        log "$name: ok ($((SECONDS - started))s)"
    else
        log "$name: FAILED with exit code $rc ($((SECONDS - started))s)"
        failed+=("$name")
    fi
}

# Without services nothing meaningful can run; stop here.
scripts/services.sh up || { log "services did not start, see the messages above"; exit 1; }

# Debian's own python3 refuses pip installs outside a venv (PEP 668) unless told otherwise; the
# pyenv Python of these machines ignores the variable. CI runs as root, hence the second one.
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python3 -m pip --version >/dev/null 2>&1; then
    log "no pip for python3, installing python3-pip with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip
fi
log "installing Python test packages from scripts/requirements-test.txt"
python3 -m pip install -q -r scripts/requirements-test.txt

eval "$(scripts/services.sh env)"
log "BOTMETER_CLICKHOUSE_URL=$BOTMETER_CLICKHOUSE_URL BOTMETER_KAFKA_BROKERS=$BOTMETER_KAFKA_BROKERS"

# The local ClickHouse cluster (ZooKeeper, 2 shards x 2 replicas) for tests/it/cluster.rs, which
# runs only when BOTMETER_CLUSTER is set. A cluster that does not start fails the run, after the
# other suites (the cluster test then says it skipped).
if scripts/services.sh cluster up; then
    eval "$(scripts/services.sh cluster env)"
    log "BOTMETER_CLUSTER=$BOTMETER_CLUSTER BOTMETER_CLUSTER_CLICKHOUSE_URL=$BOTMETER_CLUSTER_CLICKHOUSE_URL"
else
    log "the local ClickHouse cluster did not start, see the messages above"
    failed+=("cluster-services")
fi

if [[ -f Cargo.toml ]]; then
    scripts/build-deps.sh
    # tests/python/test_compose.py validates docker-compose.yml with Debian's engine-less v1 client.
    if ! command -v docker-compose >/dev/null; then
        log "installing docker-compose with apt-get (validates docker-compose.yml; no engine needed)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >/dev/null \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; }
    fi
    # tests/it/report_html.rs renders the HTML customer report in Debian's headless Chromium.
    if [[ ! -x /usr/bin/chromium ]]; then
        log "installing chromium with apt-get (renders the HTML customer report in tests/it/report_html.rs)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
    fi
    if cargo nextest --version >/dev/null 2>&1; then
        # A workspace without tests yet is not a failure (nextest's default is to fail on it).
        suite rust cargo nextest run --workspace --no-fail-fast --no-tests=warn
    else
        suite rust cargo test --workspace --no-fail-fast
    fi
    # The report, API and dashboard tests once more, every database on the local cluster: they must
    # answer the same through the Distributed tables (about a minute).
    if [[ -n ${BOTMETER_CLUSTER:-} ]]; then
        suite rust-on-cluster env BOTMETER_IT_ON_CLUSTER=1 cargo test --test it --no-fail-fast -- \
            reports_fleet:: dashboards:: api_access::
    fi
else
    log "rust: no Cargo.toml, skipped"
fi

python_tests() {
    local rc=0
    log "python: python3 -m pytest -q tests/python"
    python3 -m pytest -q tests/python || rc=$?
    return "$rc"
}
if [[ -n $(find tests/python -name 'test_*.py' -o -name '*_test.py' 2>/dev/null | head -n 1) ]]; then
    suite python python_tests
else
    log "python: no test files in tests/python, skipped"
fi

if ((${#failed[@]} > 0)); then
    log "failed: ${failed[*]}"
    exit 1
fi
log "all suites passed"
