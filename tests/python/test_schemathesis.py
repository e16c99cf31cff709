"""Schemathesis against the live HTTP API: every operation of GET /openapi.json, with `--checks all`.

A fresh ClickHouse database is migrated with the built binary (`target/debug/botmeter migrate`),
given a handful of usage and control rows (two customers, sessions, flagged, unattributed and
dead-lettered usage, control-plane anomalies), and served by `botmeter serve` on a free loopback
port with an admin API key, a plan and a customer metadata key, so that every route can answer 200.
Schemathesis then generates requests from the description (coverage, fuzzing and stateful phases)
and must find no 5xx and no response that disagrees with the description. The database is dropped at
the end. `cargo build` first (scripts/test.sh runs the Rust suite, which builds it, before this).

Every check runs (`--checks all`), none is excluded. The description gives every parameter the
schema of what its parser accepts (patterns, enums, bounds: crates/query/src/api/openapi.rs), so
schema-valid requests are accepted. Three rules span two parameters, which OpenAPI cannot say of
query parameters: `from` before `to` and at most 366 days apart, `from` and `to` both or neither,
and exactly one of `owner_id` and `credential_id` on /v1/audit, `as_of` inside `month` on
/v1/overage. A `map_case` hook (HOOKS below)
makes generated *positive* cases keep them (and drops empty values that stateful links copy from
responses, where "" means none); negative cases are sent as generated. A config file
(CONFIG below) mixes the ids and months of the inserted data into generated values, so that
requests reach reports with data, not only 404s.

Environment: BOTMETER_CLICKHOUSE_URL (default http://127.0.0.1:8123), BOTMETER_BIN (default
target/debug/botmeter, under CARGO_TARGET_DIR when set), SCHEMATHESIS_MAX_EXAMPLES (default 40), SCHEMATHESIS_SEED (default 20240501).
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLICKHOUSE_URL = os.environ.get("BOTMETER_CLICKHOUSE_URL", "http://127.0.0.1:8123")
BINARY = Path(
    os.environ.get(
        "BOTMETER_BIN", ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "botmeter"
    )
)
ADMIN_KEY = "schemathesis-admin-key"
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20240501"))


def clickhouse(sql, data=None):
    """Runs one statement over ClickHouse's HTTP interface; `data` is appended to the body."""
    body = sql.encode() if data is None else sql.encode() + b"\n" + data
    request = urllib.request.Request(CLICKHOUSE_URL, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as err:
        raise AssertionError(f"ClickHouse rejected {sql!r}: {err.read().decode()}") from err


def clickhouse_up():
    try:
        with urllib.request.urlopen(f"{CLICKHOUSE_URL}/ping", timeout=2) as response:
            return response.read() == b"Ok.\n"
    except OSError:
        return False


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def us(text):
    """Microseconds of `YYYY-MM-DD HH:MM:SS` UTC."""
    moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000


def usage(event_id, time_, owner, credential, endpoint, sign=1, status="attributed", **fields):
    row = {
        "event_id": event_id,
        "event_type": "tcp_connection_closed.v0",
        "event_time": time_,
        "event_time_us": us(time_),
        "account_id": "ac_1",
        "status": status,
        "owner_id": owner,
        "owner_kind": "bot_user" if owner.startswith("bot_") else ("user" if owner else ""),
        "credential_id": credential,
        "credential_kind": "authtoken" if credential else "",
        "endpoint_id": endpoint,
        "hostname": "app.example.com",
        "kafka_topic": "traffic",
        "ingested_at": time_,
        "sign": sign,
        "tcp_connections": 1,
    }
    row.update(fields)
    return row


def control(event_id, event_type, time_, object_id, obj, owner="", principal="usr_admin", api_key="", anomalies=()):
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_time": time_,
        "event_time_us": us(time_),
        "account_id": "ac_1",
        "principal_id": principal,
        "principal_credential_id": api_key,
        "object_id": object_id,
        "owner_id": owner,
        "object": json.dumps(obj, separators=(",", ":")),
        "kafka_topic": "control",
        "ingested_at": time_,
        "anomalies": list(anomalies),
    }


def bot_user(event_id, action, time_, bot_id, name, customer, active=True):
    obj = {"id": bot_id, "name": name, "active": active, "metadata": json.dumps({"customer": customer}, separators=(",", ":"))}
    return control(event_id, f"bot_user_{action}.v0", time_, bot_id, obj, owner=bot_id)


def credential(event_id, event_type, time_, cred_id, owner, anomalies=()):
    obj = {"id": cred_id, "owner_id": owner, "description": f"{cred_id} of {owner}", "metadata": ""}
    return control(event_id, event_type, time_, cred_id, obj, owner=owner, anomalies=anomalies)


def session(event_id, action, time_, session_id, cred_id):
    obj = {"session": {"id": session_id, "uri": ""}, "credential": {"id": cred_id, "uri": ""},
           "started_at": None, "stopped_at": None}
    return control(event_id, f"agent_session_{action}.v0", time_, session_id, obj)


# Two customers (acme: bot_a; globex: bot_g), one person, and usage that is flagged, restated,
# unattributed or dead-lettered, in May 2024.
USAGE = [
    usage("ev_1", "2024-05-01 09:10:00", "bot_a", "cr_a", "ep_1", bytes_in=100, bytes_out=1000),
    usage("ev_2", "2024-05-01 10:40:00", "bot_a", "cr_a", "ep_1", bytes_in=200, bytes_out=2000),
    usage("ev_3", "2024-05-02 11:00:00", "bot_a", "cr_a", "ep_2", event_type="http_request_complete.v0",
          tcp_connections=0, http_requests=1, bytes_in=5, bytes_out=50, status_code=200),
    usage("ev_4", "2024-05-03 12:00:00", "bot_g", "cr_g", "ep_9", bytes_in=7, bytes_out=70,
          flags=["owner_inactive"]),
    usage("ev_5", "2024-05-03 13:00:00", "usr_1", "cr_u", "ep_5", bytes_in=1, bytes_out=9,
          flags=["acl_violation"]),
    usage("ev_r", "2024-05-01 09:20:00", "bot_a", "cr_a", "ep_3", bytes_in=500, bytes_out=500),
    usage("ev_r", "2024-05-01 09:20:00", "bot_a", "cr_a", "ep_3", sign=-1, bytes_in=500, bytes_out=500),
    usage("ev_u", "2024-05-01 09:30:00", "", "", "", status="unattributed", unattributed_reason="no_endpoint",
          hostname="ghost.example.com", bytes_out=9),
    usage("ev_d", "2024-05-01 09:31:00", "", "", "", status="dead_letter", unattributed_reason="malformed_json",
          event_type="", tcp_connections=0),
]

CONTROL = [
    bot_user("ev_b1", "created", "2024-04-01 00:00:00", "bot_a", "acme-ci", "acme"),
    bot_user("ev_b2", "created", "2024-04-02 00:00:00", "bot_g", "globex-ci", "globex"),
    bot_user("ev_b3", "updated", "2024-05-02 00:00:00", "bot_g", "globex-ci", "globex", active=False),
    credential("ev_c1", "tunnel_credential_created.v0", "2024-04-01 01:00:00", "cr_a", "bot_a"),
    credential("ev_c2", "api_key_created.v0", "2024-04-01 01:00:00", "ak_a", "bot_a"),
    credential("ev_c3", "tunnel_credential_created.v0", "2024-04-02 01:00:00", "cr_g", "bot_g"),
    credential("ev_c4", "tunnel_credential_created.v0", "2024-04-03 01:00:00", "cr_u", "usr_1"),
    credential("ev_c5", "tunnel_credential_updated.v0", "2024-05-01 08:00:00", "cr_a", "bot_g",
               anomalies=["owner_change_rejected"]),
    credential("ev_c6", "tunnel_credential_deleted.v0", "2024-05-20 00:00:00", "cr_g", "bot_g"),
    control("ev_a1", "domain_created.v0", "2024-05-01 10:00:00", "rd_1", {"id": "rd_1"}, principal="bot_a",
            api_key="ak_a"),
    control("ev_a2", "domain_deleted.v0", "2024-05-01 11:00:00", "rd_1", {"id": "rd_1"}, principal="bot_a",
            api_key="ak_x", anomalies=["api_key_owner_mismatch"]),
    session("ev_s1", "start", "2024-05-01 09:00:00", "ts_1", "cr_a"),
    session("ev_s2", "stop", "2024-05-01 11:30:00", "ts_1", "cr_a"),
    session("ev_s3", "start", "2024-05-03 11:00:00", "ts_2", "cr_g"),
]

KEYS = f"""[[keys]]
name = "schemathesis"
sha256 = "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"
role = "admin"
"""

PLAN = """name = "pro"
[metrics.bytes_out]
included = 1000
unit = 100
price_per_unit = 0.10
[metrics.session_hours]
included = 1
price_per_unit = 0.5
"""


# Loaded by schemathesis (SCHEMATHESIS_HOOKS): keeps the cross-parameter rules in positive cases.
HOOKS = r'''
from datetime import datetime, timedelta, timezone

import schemathesis

MAX_RANGE_SECONDS = 366 * 86400


def seconds(value):
    """Unix seconds of a from/to value as the API reads it (fraction dropped), None if unparsable."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp()) if moment.tzinfo is not None else None


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.query, dict):
        return case
    query = case.query
    # An empty value matches no parameter's schema, so a positive case only carries one when a
    # stateful link copied it from a response, where "" means none (an event without an owner).
    for name in [name for name, value in query.items() if value == ""]:
        del query[name]
    if case.operation.path == "/v1/audit" and ("owner_id" in query) == ("credential_id" in query):
        query.pop("credential_id", None)
        query.setdefault("owner_id", "bot_a")
    if ("from" in query) != ("to" in query):
        query.setdefault("from", "2024-05-01")
        query.setdefault("to", "2024-06-01")
    if "from" in query and "to" in query:
        start, end = seconds(query["from"]), seconds(query["to"])
        if start is not None and end is not None and not start < end <= start + MAX_RANGE_SECONDS:
            later = datetime.fromtimestamp(start, timezone.utc) + timedelta(days=1)
            query["to"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    # /v1/overage projects the month from `as_of`, which must lie after the month's start and at
    # most at its end.
    if case.operation.path == "/v1/overage" and "as_of" in query and "month" in query:
        as_of = seconds(query["as_of"])
        try:
            year, month = (int(part) for part in query["month"].split("-"))
            first = datetime(year, month, 1, tzinfo=timezone.utc)
            after = (first + timedelta(days=32)).replace(day=1)
        except (ValueError, OverflowError):
            first = None
        if first is not None and as_of is not None and not first.timestamp() < as_of <= after.timestamp():
            query["as_of"] = (first + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return case
'''

# Values of the inserted data, mixed into generated ones half of the time.
CONFIG = """
[dictionaries.owners]
values = ["bot_a", "bot_g", "usr_1"]
[dictionaries.credentials]
values = ["cr_a", "ak_a", "cr_g"]
[dictionaries.customers]
values = ["acme", "globex", "bot_a"]
[dictionaries.months]
values = ["2024-05", "2024-04"]
[dictionaries.days]
values = ["2024-05-01", "2024-05-02", "2024-05-03T12:00:00Z"]

[parameters]
"path.owner_id" = { dictionary = "owners", probability = 0.5 }
"query.owner_id" = { dictionary = "owners", probability = 0.5 }
"query.credential_id" = { dictionary = "credentials", probability = 0.5 }
"path.customer_id" = { dictionary = "customers", probability = 0.5 }
"query.month" = { dictionary = "months", probability = 0.5 }
"query.from" = { dictionary = "days", probability = 0.5 }
"""


def insert(database, table, rows):
    data = "\n".join(json.dumps(row) for row in rows).encode()
    clickhouse(f"INSERT INTO {database}.{table} FORMAT JSONEachRow", data)


def wait_until_up(url, process, log, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"botmeter serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"botmeter serve did not become ready in {timeout}s:\n{log.read_text()}")


@pytest.fixture()
def live_api(tmp_path):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: run `cargo build` first")
    if not clickhouse_up():
        pytest.fail(f"ClickHouse does not answer at {CLICKHOUSE_URL}: run scripts/services.sh up")
    database = f"botmeter_st_{os.getpid()}_{int(time.time() * 1000) % 1_000_000_000}"
    env = dict(os.environ, BOTMETER_CLICKHOUSE_URL=CLICKHOUSE_URL, BOTMETER_CLICKHOUSE_DATABASE=database,
               BOTMETER_LOG="warn")
    process = None
    try:
        subprocess.run([BINARY, "migrate"], env=env, check=True, capture_output=True, timeout=60)
        insert(database, "usage_events", USAGE)
        insert(database, "control_events_log", CONTROL)
        (tmp_path / "keys.toml").write_text(KEYS)
        (tmp_path / "plan.toml").write_text(PLAN)
        url = f"http://127.0.0.1:{free_port()}"
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [BINARY, "serve", "--listen", url.removeprefix("http://"),
                 "--api-keys-file", tmp_path / "keys.toml", "--plan", tmp_path / "plan.toml",
                 "--customer-metadata-key", "customer", "--metrics-listen", "127.0.0.1:0"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        wait_until_up(url, process, log)
        yield url, log
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        clickhouse(f"DROP DATABASE IF EXISTS {database}")


def schemathesis_command():
    exe = shutil.which("schemathesis") or shutil.which("st")
    return [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]


def test_schemathesis_finds_nothing(live_api, tmp_path):
    url, log = live_api
    # Sanity: the data is there, so generated requests reach real reports, not only empty ones.
    request = urllib.request.Request(
        f"{url}/v1/customers/acme/report?month=2024-05", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        report = json.load(response)
    assert report["totals"]["bytes_out"] == 3050, report

    (tmp_path / "botmeter_st_hooks.py").write_text(HOOKS)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    env = dict(os.environ, SCHEMATHESIS_HOOKS="botmeter_st_hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    command = schemathesis_command() + [
        "--config-file", str(tmp_path / "schemathesis.toml"),
        "run", f"{url}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {ADMIN_KEY}",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "2",
        "--request-timeout", "20",
        "--generation-database", "none",
        "--no-color",
        "--report", "junit",
        "--report-dir", str(tmp_path / "schemathesis-report"),
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(output)
    print(f"schemathesis took {elapsed:.1f}s")
    server_log = log.read_text()
    assert result.returncode == 0, f"schemathesis failed ({result.returncode}):\n{output}\n--- serve log ---\n{server_log}"
    assert "panicked" not in server_log, server_log
