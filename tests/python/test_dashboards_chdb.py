"""The Grafana dashboards' SQL and the investigation queries on current ClickHouse, in process (chDB).

tests/it/dashboards.rs runs the same files against the ClickHouse 18.16 server on simulated fleets
and compares them with the ground truth and the HTTP API; this runs them on the ClickHouse that chDB
embeds, on a few hand-made rows whose every number is worked out below, so the dashboards are known
to work on both. Nothing is copied: the tests read dashboards/*.json and queries/*.sql.

The panel SQL is expanded the way Grafana and the grafana-clickhouse-datasource plugin expand it for
current ClickHouse: template variables first (`${name}`, `${name:singlequote}`), then the plugin's
macros as its pkg/macros/macros.go renders them:

    $__timeFilter(c)    c >= toDateTime(<from>) AND c <= toDateTime(<to>)
    $__fromTime         toDateTime(<from>)          $__toTime   toDateTime(<to>)
    $__interval_s       <interval in seconds, at least 1>
    $__timeInterval(c)  toStartOfInterval(toDateTime(c), INTERVAL <interval> second)

The dashboards do not use $__timeInterval (ClickHouse 18.16 has no toStartOfInterval); they bucket
with `toDateTime(intDiv(toUInt32(event_time), $__interval_s) * $__interval_s, 'UTC')`, which
test_interval_buckets_equal_the_plugin_macro checks against the macro here.

Needs the `chdb-core` package (`pip install chdb-core`, imported as `chdb`).
"""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from test_migrations_chdb import db  # noqa: F401  (a fixture: the migrated schema in chDB)

ROOT = Path(__file__).resolve().parents[2]


def is_clickhouse_dashboard(path):
    """Whether the dashboard reads ClickHouse (its `datasource` variable picks the plugin). The ops
    dashboard (ops.json, PromQL on botmeter's own /metrics) has no SQL: test_compose.py checks it."""
    variables = json.loads(path.read_text()).get("templating", {}).get("list", [])
    return any(v["type"] == "datasource" and v["query"] == "grafana-clickhouse-datasource" for v in variables)


DASHBOARDS = [p for p in sorted((ROOT / "dashboards").glob("*.json")) if is_clickhouse_dashboard(p)]
QUERIES = {p.name: p.read_text() for p in sorted((ROOT / "queries").glob("*.sql"))}

VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::([A-Za-z0-9_]+))?\}")
MACRO = re.compile(r"\$__([A-Za-z0-9_]+)")


# --- Expansion ------------------------------------------------------------------------------------


def interpolate(sql, variables):
    """Grafana's template variables: `${name}` joins values with commas, `${name:singlequote}` quotes
    each (escaping `'` as `\\'`)."""

    def replace(match):
        name, fmt = match.group(1), match.group(2)
        values = variables[name]
        values = [values] if isinstance(values, str) else list(values)
        if fmt is None:
            return ",".join(values)
        assert fmt == "singlequote", fmt
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)

    return VARIABLE.sub(replace, sql)


def expand_macros(sql, start, end, interval_s):
    """The plugin's macros for current ClickHouse (grafana/clickhouse-datasource pkg/macros)."""
    out, i = [], 0
    n = max(int(interval_s), 1)
    while True:
        match = MACRO.search(sql, i)
        if not match:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i : match.start()])
        name, j, args = match.group(1), match.end(), []
        if j < len(sql) and sql[j] == "(":
            depth, k, begin = 0, j, j + 1
            while True:
                c = sql[k]
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        args.append(sql[begin:k].strip())
                        break
                elif c == "," and depth == 1:
                    args.append(sql[begin:k].strip())
                    begin = k + 1
                k += 1
            j = k + 1
        if name == "timeFilter":
            rendered = f"{args[0]} >= toDateTime({start}) AND {args[0]} <= toDateTime({end})"
        elif name == "fromTime":
            rendered = f"toDateTime({start})"
        elif name == "toTime":
            rendered = f"toDateTime({end})"
        elif name == "interval_s":
            rendered = str(n)
        elif name == "timeInterval":
            rendered = f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {n} second)"
        else:
            raise AssertionError(f"macro $__{name} is not one the dashboards may use")
        out.append(rendered)
        i = j


def expand(sql, start, end, interval_s, variables):
    return expand_macros(interpolate(sql, variables), start, end, interval_s)


def set_param(sql, name, expr):
    """Replaces the expression of the one `<expr> AS <name>[,] -- param…` line."""
    pattern = re.compile(rf"^(\s*)(.+?)(\s+AS\s+{name})(,?\s*--\s*param.*)$", re.MULTILINE)
    new, count = pattern.subn(lambda m: m.group(1) + expr + m.group(3) + m.group(4), sql)
    assert count == 1, f"parameter {name}: {count} lines"
    return new


def with_params(sql, **params):
    for name, expr in params.items():
        sql = set_param(sql, name, expr)
    return sql


# --- Data -------------------------------------------------------------------------------------------


def ts(text):
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


FROM = ts("2026-03-01 00:00:00")
TO = ts("2026-03-03 00:00:00")
GB = 10**9


def usage(event_id, time, owner, endpoint, host, port=443, status="attributed", sign=1, **values):
    row = {
        "event_id": event_id,
        "event_type": "tcp_connection_closed.v0" if values.get("tcp_connections") else "http_request_complete.v0",
        "event_time": time,
        "event_time_us": ts(time) * 1_000_000,
        "status": status,
        "owner_id": owner,
        "owner_kind": {"bot": "bot_user", "usr": "user"}.get(owner[:3], ""),
        "credential_id": {"bot_a": "cr_a", "bot_b": "cr_b", "usr_c": "cr_c"}.get(owner, ""),
        "credential_kind": "authtoken" if owner else "",
        "endpoint_id": endpoint,
        "hostname": host,
        "port": port,
        "kafka_topic": "traffic",
        "sign": sign,
    }
    row.update(values)
    return row


USAGE = [
    usage("e1", "2026-03-01 10:15:00", "bot_a", "ep_a2", "2.tcp.ngrok.io", 12345, bytes_in=GB // 10, bytes_out=GB, tcp_connections=1),
    usage("e2", "2026-03-02 10:20:00", "bot_a", "ep_a2", "2.tcp.ngrok.io", 12345, bytes_in=2 * GB // 10, bytes_out=3 * GB, tcp_connections=1),
    usage("e3", "2026-03-02 10:30:00", "bot_a", "ep_a1", "a1.a.example.com", http_requests=1),
    usage("e4", "2026-03-02 11:05:00", "bot_a", "ep_a1", "a1.a.example.com", bytes_in=GB // 20, bytes_out=GB // 2, tcp_connections=1, flags=["acl_violation"]),
    usage("e5", "2026-03-02 10:10:00", "bot_b", "ep_b1", "b1.ngrok.app", bytes_in=GB // 100, bytes_out=7 * GB // 10, tcp_connections=1, flags=["credential_deleted"]),
    usage("e6", "2026-03-02 10:40:00", "bot_b", "ep_b1", "b1.ngrok.app", http_requests=1, flags=["credential_deleted"]),
    usage("e7", "2026-03-02 12:00:00", "usr_c", "ep_c1", "c1.ngrok.app", bytes_in=GB // 200, bytes_out=GB // 20, tcp_connections=1),
    # A restatement of e7 that changes nothing: a -1 copy and a +1 copy.
    usage("e7", "2026-03-02 12:00:00", "usr_c", "ep_c1", "c1.ngrok.app", sign=-1, bytes_in=GB // 200, bytes_out=GB // 20, tcp_connections=1),
    usage("e7", "2026-03-02 12:00:00", "usr_c", "ep_c1", "c1.ngrok.app", bytes_in=GB // 200, bytes_out=GB // 20, tcp_connections=1),
    usage("e8", "2026-03-02 10:50:00", "", "", "gone.ngrok.app", status="unattributed", unattributed_reason="no_endpoint", bytes_in=GB // 1000, bytes_out=4 * GB // 10, tcp_connections=1),
    usage("e9", "2026-03-02 11:10:00", "", "ep_x", "s.ngrok.app", status="unattributed", unattributed_reason="unknown_session", http_requests=1),
    usage("", "2026-03-02 12:30:00", "", "", "", 0, status="dead_letter", unattributed_reason="malformed_json"),
    # After the range.
    usage("e10", "2026-03-05 00:00:00", "bot_a", "ep_a2", "2.tcp.ngrok.io", 12345, bytes_out=99 * GB, tcp_connections=1),
]

# In the range: attributed data out 5.25 GB (bot_a 4.5, bot_b 0.7, usr_c 0.05), data in 0.365 GB,
# 2 requests, 5 connections, 5 active endpoint hours (bot_a 3: ep_a2 on both days at 10h, ep_a1 at
# 11h, its 10h request moving no bytes; bot_b 1; usr_c 1); unattributed 0.4 GB out, 2 events.


def control(event_id, event_type, time, object_, owner="", principal="", subject="", anomalies=()):
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_time": time,
        "event_time_us": ts(time) * 1_000_000,
        "principal_id": principal,
        "principal_subject": subject,
        "object_id": object_.get("id", ""),
        "owner_id": owner,
        # Compact, as botmeter writes it: visitParamExtract* (18.16 has no JSONExtract*) reads no spaces.
        "object": json.dumps(object_, separators=(",", ":")),
        "kafka_topic": "control",
        "anomalies": list(anomalies),
    }


CONTROL = [
    control("c1", "bot_user_created.v0", "2026-03-01 00:00:00", {"id": "bot_a", "name": "alpha-bot", "active": True}, "bot_a", "usr_c", "c@example.com"),
    control("c2", "bot_user_created.v0", "2026-03-01 00:01:00", {"id": "bot_b", "name": "beta-bot", "active": True}, "bot_b", "usr_c", "c@example.com"),
    control("c3", "bot_user_updated.v0", "2026-03-02 08:00:00", {"id": "bot_b", "name": "beta-bot", "active": False}, "bot_b", "usr_c", "c@example.com"),
    control("c4", "tunnel_credential_created.v0", "2026-03-01 00:02:00", {"id": "cr_a", "owner_id": "bot_a", "acl": ["bind:*.a.example.com"]}, "bot_a", "usr_c", "c@example.com"),
    control("c5", "tunnel_credential_created.v0", "2026-03-01 00:03:00", {"id": "cr_b", "owner_id": "bot_b", "acl": []}, "bot_b", "usr_c", "c@example.com"),
    control("c6", "tunnel_credential_deleted.v0", "2026-03-02 09:00:00", {"id": "cr_b", "owner_id": "bot_b"}, "bot_b", "usr_c", "c@example.com"),
    control("c7", "tunnel_credential_created.v0", "2026-03-01 00:04:00", {"id": "cr_c", "owner_id": "usr_c", "acl": []}, "usr_c", "usr_c", "c@example.com"),
    control("c8", "api_key_created.v0", "2026-03-01 00:05:00", {"id": "ak_a", "owner_id": "bot_a"}, "bot_a", "usr_c", "c@example.com"),
    control("c9", "endpoint_created.v0", "2026-03-01 01:00:00", {"id": "ep_gone", "host": "gone.ngrok.app", "port": 443}, "bot_b"),
    # An update that tried to move cr_a to bot_b: recorded, rejected.
    control("c10", "tunnel_credential_updated.v0", "2026-03-02 09:30:00", {"id": "cr_a", "owner_id": "bot_b"}, "bot_b", "usr_c", "c@example.com", ["owner_change_rejected"]),
]

DEAD_LETTERS = [
    {"kafka_topic": "traffic", "kafka_partition": 0, "kafka_offset": 7, "reason_kind": "malformed_json", "reason": "expected value", "payload": "x", "payload_bytes": 1, "received_at": "2026-03-02 12:30:00"},
    {"kafka_topic": "control", "kafka_partition": 0, "kafka_offset": 3, "reason_kind": "invalid_field", "reason": "field object.acl", "payload": "{}", "payload_bytes": 2, "received_at": "2026-03-02 12:31:00"},
]


@pytest.fixture()
def fleet(db):  # noqa: F811  (the fixture imported above)
    db.insert("usage_events", USAGE)
    db.insert("control_events_log", CONTROL)
    db.insert("dead_letters", DEAD_LETTERS)
    return db


def run(db, sql):
    """Rows as dicts, 64-bit integers as ints; plus the column names and types in order."""
    result = db.session.query(sql.rstrip().rstrip(";"), "JSONCompact")
    data = json.loads(result.bytes() or b'{"meta": [], "data": []}')
    columns = [(c["name"], c["type"]) for c in data["meta"]]
    rows = []
    for values in data["data"]:
        row = {}
        for (name, kind), value in zip(columns, values):
            if value is not None and re.match(r"^(Nullable\()?U?Int", kind):
                value = int(value)
            row[name] = value
        rows.append(row)
    return columns, rows


# --- The dashboards --------------------------------------------------------------------------------

VARIABLES = {
    "owner_kind": ["bot_user", "user"],
    "top_n": "2",
    "owner": "bot_a",
    "quota_data_out_gb": "4",
    "quota_requests": "1",
    "quota_tcp_connections": "10",
    "quota_endpoint_hours": "4",
    "drop_grace_seconds": "300",
    "idle_days": "30",
}


def load(path):
    dashboard = json.loads(path.read_text())
    panels = [p for p in dashboard["panels"] if p.get("targets")]
    return dashboard, panels


def used_columns(panel):
    """Columns the panel's configuration names: overrides by name and `${__field.labels.X}`."""
    out = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"}
    display = panel["fieldConfig"]["defaults"].get("displayName", "")
    if display.startswith("${__field.labels."):
        out.add(display[len("${__field.labels.") : -1])
    return out


def run_dashboard(db, path, variables=VARIABLES, interval_s=3600):
    """Every query variable and panel of a dashboard, expanded as the plugin expands them."""
    dashboard, panels = load(path)
    results = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            results["variable " + variable["name"]] = run(db, expand(variable["query"], FROM, TO, interval_s, variables))
    for panel in panels:
        (target,) = panel["targets"]
        assert target["editorType"] == "sql" and target["datasource"]["uid"] == "${datasource}"
        columns, rows = run(db, expand(target["rawSql"], FROM, TO, interval_s, variables))
        names = [c for c, _ in columns]
        missing = used_columns(panel) - set(names)
        assert not missing, f"{path.name}: {panel['title']}: no column {missing} in {names}"
        if target["format"] == 0:
            assert names[0] == "time" and columns[0][1].startswith("DateTime"), (panel["title"], columns)
        results[panel["title"]] = (columns, rows)
    return results


def by_name(name):
    return ROOT / "dashboards" / name


def test_every_dashboard_runs_on_current_clickhouse(fleet):
    assert len(DASHBOARDS) >= 4
    for path in DASHBOARDS:
        run_dashboard(fleet, path)


def test_overview(fleet):
    r = run_dashboard(fleet, by_name("overview.json"))
    (usage,) = r["Usage in range"][1]
    assert usage == {"data_out": 5_250_000_000, "data_in": 365_000_000, "requests": 2, "tcp_conns": 5, "endpoint_hours": 5}
    (outside,) = r["Not attributed"][1]
    assert outside["unattributed_data_out"] == 400_000_000 and outside["unattributed_events"] == 2
    assert outside["unattributed_share"] == pytest.approx(0.4 / 5.65)
    # top_n = 2: bot_a and bot_b by name, usr_c as 'other owners'; hourly buckets.
    series = {(row["time"], row["owner"]): row["data_out"] for row in r["Data transfer out per owner"][1] if row["data_out"]}
    assert series == {
        ("2026-03-01 10:00:00", "bot_a"): 1_000_000_000,
        ("2026-03-02 10:00:00", "bot_a"): 3_000_000_000,
        ("2026-03-02 11:00:00", "bot_a"): 500_000_000,
        ("2026-03-02 10:00:00", "bot_b"): 700_000_000,
        ("2026-03-02 12:00:00", "other owners"): 50_000_000,
    }
    hours = {}
    for row in r["Active endpoint hours per owner"][1]:
        hours[row["owner"]] = hours.get(row["owner"], 0) + row["endpoint_hours"]
    assert hours == {"bot_a": 3, "bot_b": 1, "other owners": 1}
    top = r["Top owners"][1]
    assert [row["owner"] for row in top] == ["bot_a", "bot_b", "usr_c"]
    assert top[0]["name"] == "alpha-bot" and top[2]["name"] == "c@example.com"
    assert top[0]["data_out"] == 4_500_000_000 and top[0]["endpoint_hours"] == 3 and top[0]["flagged_data_out"] == 500_000_000
    assert top[0]["share_of_data_out"] == pytest.approx(4.5 / 5.25)
    assert top[2]["data_out"] == 50_000_000, "the restated row counts once"


def test_owner_drill_down(fleet):
    r = run_dashboard(fleet, by_name("owner.json"))
    assert [row["owner_id"] for row in r["variable owner"][1]] == ["bot_a", "bot_b", "usr_c"]
    (info,) = r["Owner"][1]
    assert info == {"owner": "bot_a", "owner_type": "bot_user", "name": "alpha-bot", "state": "active", "credentials": 2, "credentials_revoked": 0}
    (usage,) = r["Usage in range"][1]
    assert usage == {"data_out": 4_500_000_000, "data_in": 350_000_000, "requests": 1, "tcp_conns": 3, "endpoint_hours": 3, "flagged_data_out": 500_000_000}
    credentials = {row["credential"]: row for row in r["Credentials"][1]}
    assert set(credentials) == {"cr_a", "ak_a"}
    assert credentials["cr_a"]["data_out"] == 4_500_000_000 and credentials["cr_a"]["endpoints"] == 2
    assert credentials["ak_a"]["credential_type"] == "api_key" and credentials["ak_a"]["data_out"] == 0
    endpoints = {row["endpoint"]: row for row in r["Endpoints"][1]}
    assert endpoints["ep_a2"]["endpoint_hours"] == 2 and endpoints["ep_a2"]["port"] == 12345
    assert endpoints["ep_a1"]["requests"] == 1 and endpoints["ep_a1"]["endpoint_hours"] == 1
    assert [(row["flag"], row["events"], row["data_out"]) for row in r["Flagged usage"][1]] == [("acl_violation", 1, 500_000_000)]
    # Credential hygiene as of the end of the range (ordered by age, then id): cr_a's ACL binds
    # *.a.example.com only; its last use is e4; the API key has no bind rules.
    assert [{k: row[k] for k in ("credential", "credential_type", "age_days", "deleted_at", "last_used_at", "unused_days",
                                  "rotation_due", "no_acl", "wildcard_acl", "acl_violations", "used_after_owner_deactivated")}
            for row in r["Credential hygiene"][1]] == [
        {"credential": "ak_a", "credential_type": "api_key", "age_days": 1, "deleted_at": "", "last_used_at": "",
         "unused_days": 1, "rotation_due": 0, "no_acl": 0, "wildcard_acl": 0, "acl_violations": 0,
         "used_after_owner_deactivated": 0},
        {"credential": "cr_a", "credential_type": "authtoken", "age_days": 1, "deleted_at": "",
         "last_used_at": "2026-03-02 11:05:00", "unused_days": 0, "rotation_due": 0, "no_acl": 0, "wildcard_acl": 0,
         "acl_violations": 1, "used_after_owner_deactivated": 0},
    ]

    # bot_b: deactivated, its credential revoked; the rejected change names it but moves nothing.
    r = run_dashboard(fleet, by_name("owner.json"), dict(VARIABLES, owner="bot_b"))
    (info,) = r["Owner"][1]
    assert (info["state"], info["credentials"], info["credentials_revoked"]) == ("inactive", 1, 1)
    (credential,) = r["Credentials"][1]
    assert credential["credential"] == "cr_b" and credential["revoked_at"] == "2026-03-02 09:00:00"
    (hygiene,) = r["Credential hygiene"][1]
    # Deleted 32h57m after its creation, used after its deletion (so unused 0 days), an empty ACL.
    assert (hygiene["credential"], hygiene["age_days"], hygiene["deleted_at"], hygiene["last_used_at"]) == (
        "cr_b", 1, "2026-03-02 09:00:00", "2026-03-02 10:40:00")
    assert (hygiene["unused_days"], hygiene["rotation_due"], hygiene["no_acl"], hygiene["wildcard_acl"]) == (0, 0, 1, 0)
    assert [row["anomaly"] for row in r["Control-plane anomalies"][1]] == ["owner_change_rejected"]

    r = run_dashboard(fleet, by_name("owner.json"), dict(VARIABLES, owner="usr_c"))
    assert r["Owner"][1][0]["name"] == "c@example.com"
    assert r["Usage in range"][1][0]["data_out"] == 50_000_000


def test_overage(fleet):
    r = run_dashboard(fleet, by_name("overage.json"))
    metrics = {row["metric"]: row for row in r["Month to date vs quota"][1]}
    assert metrics["data transfer out (GB)"]["used"] == pytest.approx(5.25)
    assert metrics["data transfer out (GB)"]["overage"] == pytest.approx(1.25)
    assert metrics["HTTP requests"]["overage"] == pytest.approx(1)
    assert metrics["TCP connections"]["overage"] == 0 and metrics["TCP connections"]["used_of_quota"] == pytest.approx(0.5)
    assert metrics["active endpoint hours"]["used"] == 5 and metrics["active endpoint hours"]["overage"] == 1
    (outside,) = r["Not attributed this month"][1]
    assert outside["unattributed_data_out_gb"] == pytest.approx(0.4)
    cumulative = r["Quota used, month to date"][1]
    assert [row["time"] for row in cumulative] == ["2026-03-01 10:00:00", "2026-03-02 10:00:00", "2026-03-02 11:00:00", "2026-03-02 12:00:00"]
    assert cumulative[-1]["data_out"] == pytest.approx(5.25 / 4) and cumulative[-1]["endpoint_hours"] == pytest.approx(5 / 4)
    shares = {row["owner"]: row for row in r["Each owner's share, month to date"][1]}
    assert shares["bot_a"]["share_data_out"] == pytest.approx(4.5 / 5.25)
    assert shares["bot_a"]["overage_data_out_gb"] == pytest.approx(4.5 / 5.25 * 1.25)
    assert shares["bot_b"]["share_requests"] == pytest.approx(0.5) and shares["bot_b"]["overage_requests"] == pytest.approx(0.5)
    assert shares["usr_c"]["share_endpoint_hours"] == pytest.approx(0.2)
    assert sum(row["share_data_out"] for row in shares.values()) == pytest.approx(1)


def test_anomalies(fleet):
    r = run_dashboard(fleet, by_name("anomalies.json"))
    (stat,) = r["Flagged and unattributed"][1]
    assert stat == {"flagged_events": 3, "flagged_data_out": 1_200_000_000, "unattributed_events": 2, "unattributed_data_out": 400_000_000}
    assert r["Dead letters"][1] == [{"dead_letters": 2}]
    flagged = {(row["flag"], row["owner"]): (row["events"], row["data_out"], row["requests"]) for row in r["Flagged usage by flag and owner"][1]}
    assert flagged == {("acl_violation", "bot_a"): (1, 500_000_000, 0), ("credential_deleted", "bot_b"): (2, 700_000_000, 1)}
    unattributed = {(row["reason"], row["host"]): (row["events"], row["data_out"]) for row in r["Unattributed by reason and hostname"][1]}
    assert unattributed == {("no_endpoint", "gone.ngrok.app"): (1, 400_000_000), ("unknown_session", "s.ngrok.app"): (1, 0)}
    letters = {(row["topic"], row["reason_kind"]): row["letters"] for row in r["Dead letters by reason"][1]}
    assert letters == {("traffic", "malformed_json"): 1, ("control", "invalid_field"): 1}
    (anomaly,) = r["Control-plane anomalies"][1]
    assert (anomaly["event_id"], anomaly["anomaly"], anomaly["named_owner"]) == ("c10", "owner_change_rejected", "bot_b")
    by_flag = {row["flag"]: row["data_out"] for row in r["Flagged data out by flag"][1]}
    assert by_flag == {"credential_deleted": 700_000_000, "acl_violation": 500_000_000}


# --- The fleet dashboard ---------------------------------------------------------------------------
# On 2026-03-01: cr_a (bot_a) has a session 01:00-05:00 and another from 06:00; cr_b (bot_b) one
# 02:00-03:00 and traffic at 07:00; cr_c (usr_c) none; cr_d (bot_b) one from 01:00, never stopped,
# but cr_d is deleted at 04:00; cr_e's bot user bot_e is deleted at 03:00 with a session from 02:00.

DAY = ts("2026-03-01 00:00:00")


def at(hhmm):
    return DAY + int(hhmm[:2]) * 3600 + int(hhmm[3:]) * 60


def device_event(event_id, event_type, hhmm, object_id, owner, object_):
    return control(event_id, event_type, f"2026-03-01 {hhmm}:00", dict(object_, id=object_id), owner)


DEVICES = [
    device_event("f1", "tunnel_credential_created.v0", "00:00", "cr_a", "bot_a", {"owner_id": "bot_a"}),
    device_event("f2", "tunnel_credential_created.v0", "00:00", "cr_b", "bot_b", {"owner_id": "bot_b"}),
    device_event("f3", "ssh_public_key_created.v0", "00:00", "cr_c", "usr_c", {"owner_id": "usr_c"}),
    device_event("f4", "tunnel_credential_created.v0", "00:00", "cr_d", "bot_b", {"owner_id": "bot_b"}),
    device_event("f5", "tunnel_credential_deleted.v0", "04:00", "cr_d", "bot_b", {"owner_id": "bot_b"}),
    device_event("f6", "tunnel_credential_created.v0", "00:00", "cr_e", "bot_e", {"owner_id": "bot_e"}),
    device_event("f7", "bot_user_deleted.v0", "03:00", "bot_e", "bot_e", {}),
    device_event("s1", "agent_session_start.v0", "01:00", "ts_1", "bot_a", {"credential": {"id": "cr_a"}}),
    device_event("s2", "agent_session_stop.v0", "05:00", "ts_1", "bot_a", {"credential": {"id": "cr_a"}}),
    device_event("s3", "agent_session_start.v0", "06:00", "ts_2", "bot_a", {"credential": {"id": "cr_a"}}),
    device_event("s4", "agent_session_start.v0", "02:00", "ts_3", "bot_b", {"credential": {"id": "cr_b"}}),
    device_event("s5", "agent_session_stop.v0", "03:00", "ts_3", "bot_b", {"credential": {"id": "cr_b"}}),
    device_event("s6", "agent_session_start.v0", "01:00", "ts_4", "bot_b", {"credential": {"id": "cr_d"}}),
    device_event("s7", "agent_session_start.v0", "02:00", "ts_5", "bot_e", {"credential": {"id": "cr_e"}}),
]


@pytest.fixture()
def devices(db):  # noqa: F811  (the fixture imported above)
    db.insert("control_events_log", DEVICES)
    db.insert("usage_events", [usage("t1", "2026-03-01 07:00:00", "bot_b", "ep_b", "b.ngrok.app", bytes_out=10)])
    return db


def run_fleet(db, end, **variables):
    path = by_name("fleet.json")
    dashboard, panels = load(path)
    values = {**VARIABLES, "owner": "*", **variables}
    results = {}
    for panel in panels:
        (target,) = panel["targets"]
        columns, rows = run(db, expand(target["rawSql"], DAY, end, 3600, values))
        assert not used_columns(panel) - {c for c, _ in columns}, panel["title"]
        results[panel["title"]] = rows
    return results


def test_fleet(devices):
    r = run_fleet(devices, at("08:00"))
    # cr_d and cr_e are revoked (their own deletion, their bot user's) before 08:00.
    assert r["Fleet at the end of the range"] == [
        {"credentials": 3, "agents_online": 1, "online": 1, "reconnecting": 0, "dropped": 1, "never_seen": 1, "idle": 0}]
    assert r["Dropped devices"] == [{"credential": "cr_b", "kind": "authtoken", "owner": "bot_b", "owner_type": "bot_user",
                                     "dropped_at": "2026-03-01 03:00:00", "gone_for": 5 * 3600, "last_seen": "2026-03-01 07:00:00"}]
    seen = {row["credential"]: (row["state"], row["agents_online"], row["last_seen"]) for row in r["Last seen per credential"]}
    assert seen == {"cr_a": ("online", 1, "2026-03-01 06:00:00"), "cr_b": ("dropped", 0, "2026-03-01 07:00:00"),
                    "cr_c": ("never_seen", 0, "")}
    # Sessions online at each hour (a stop at the point itself still counts, a start does not):
    # 03:00 has ts_1, ts_3 (stopping then), ts_4 and ts_5 (bot_e deleted then); 06:00 none.
    series = [(row["time"][11:16], row["agents_online"]) for row in r["Agents online"]]
    assert series == [("00:00", 0), ("01:00", 0), ("02:00", 2), ("03:00", 4), ("04:00", 2), ("05:00", 1), ("06:00", 0),
                      ("07:00", 1), ("08:00", 1)]
    by_kind = {(row["time"][11:16], row["owner_kind"]): row["agents"] for row in r["Agents online by owner kind"]}
    assert by_kind[("03:00", "bot_user")] == 4 and by_kind[("03:00", "user")] == 0 and len(by_kind) == 18

    # At 04:30: cr_b's traffic at 07:00 is after the end, so its last sighting is its session start
    # (read from the raw rows); cr_d was deleted at 04:00.
    r = run_fleet(devices, at("04:30"))
    seen = {row["credential"]: (row["state"], row["last_seen"]) for row in r["Last seen per credential"]}
    assert seen == {"cr_a": ("online", "2026-03-01 01:00:00"), "cr_b": ("dropped", "2026-03-01 02:00:00"),
                    "cr_c": ("never_seen", "")}
    # Inside the grace: reconnecting, not dropped.
    r = run_fleet(devices, at("03:04"))
    assert r["Fleet at the end of the range"][0]["reconnecting"] == 1 and r["Dropped devices"] == []

    # Two days on, idle after one day: cr_c (never seen, created two days before) and cr_b.
    r = run_fleet(devices, ts("2026-03-03 00:00:00"), idle_days="1")
    assert r["Fleet at the end of the range"][0]["idle"] == 2
    assert [row["credential"] for row in r["Last seen per credential"] if row["idle"]] == ["cr_c", "cr_b"]

    # Narrowed to users, then to bot_b.
    r = run_fleet(devices, at("08:00"), owner_kind=["user"])
    assert [row["credential"] for row in r["Last seen per credential"]] == ["cr_c"]
    r = run_fleet(devices, at("08:00"), owner="bot_b")
    assert [row["credential"] for row in r["Last seen per credential"]] == ["cr_b"]


def test_interval_buckets_equal_the_plugin_macro(fleet):
    """The dashboards' bucket arithmetic is what $__timeInterval computes, for any interval."""
    ours = "toDateTime(intDiv(toUInt32(event_time), $__interval_s) * $__interval_s, 'UTC')"
    for interval in (1, 20, 300, 3600, 7200, 86400):
        sql = (
            f"SELECT countIf(toUInt32({ours}) != toUInt32($__timeInterval(event_time))) AS differ, count() AS n "
            "FROM usage_events"
        )
        _, rows = run(fleet, expand(sql, FROM, TO, interval, {}))
        assert rows == [{"differ": 0, "n": len(USAGE)}], interval


# --- The investigation queries ---------------------------------------------------------------------

SPAN = {"from_time": "toDateTime('2026-03-01 00:00:00', 'UTC')", "to_time": "toDateTime('2026-03-03 00:00:00', 'UTC')"}
MONTH = {"month_start": "toDate('2026-03-01')", "until": "toDateTime('2026-03-03 00:00:00', 'UTC')"}


def test_every_query_runs_with_its_parameters(fleet):
    assert len(QUERIES) >= 6
    params = {
        "01_month_totals.sql": MONTH,
        "02_top_owners_month.sql": MONTH,
        "03_owner_credentials_endpoints.sql": dict(SPAN, wanted_owner="'bot_a'"),
        "04_daily_spikes.sql": {"first_day": "toDate('2026-03-02')", "last_day": "toDate('2026-03-02')"},
        "05_revoked_or_acl_violating_usage.sql": SPAN,
        "06_unattributed_by_hostname.sql": SPAN,
    }
    assert set(params) == set(QUERIES), "every query is exercised"
    for name, sql in QUERIES.items():
        run(fleet, with_params(sql, **params[name]))


def test_month_totals(fleet):
    _, rows = run(fleet, with_params(QUERIES["01_month_totals.sql"], **MONTH))
    rows = {row["status"]: row for row in rows}
    assert rows["attributed"]["events"] == 7 and rows["attributed"]["data_out_gb"] == pytest.approx(5.25)
    assert rows["attributed"]["endpoint_hours"] == 5 and rows["attributed"]["requests"] == 2
    assert rows["unattributed"]["events"] == 2 and rows["unattributed"]["data_out_gb"] == pytest.approx(0.4)
    assert rows["dead_letter"]["events"] == 1
    assert rows["attributed"]["prev_events"] == 0


def test_top_owners_month(fleet):
    _, rows = run(fleet, with_params(QUERIES["02_top_owners_month.sql"], **MONTH))
    assert [row["owner"] for row in rows] == ["bot_a", "bot_b", "(unattributed)", "usr_c"]
    assert rows[0]["data_out_gb"] == pytest.approx(4.5) and rows[0]["share_of_data_out"] == pytest.approx(4.5 / 5.65, abs=1e-4)
    assert rows[2]["data_out_gb"] == pytest.approx(0.4) and rows[3]["tcp_conns"] == 1


def test_owner_credentials_endpoints(fleet):
    _, rows = run(fleet, with_params(QUERIES["03_owner_credentials_endpoints.sql"], **SPAN, wanted_owner="'bot_a'"))
    assert [(row["credential"], row["endpoint"], row["endpoint_hours"]) for row in rows] == [("cr_a", "ep_a2", 2), ("cr_a", "ep_a1", 1)]
    assert rows[0]["data_out_gb"] == pytest.approx(4.0) and rows[1]["flags"] == ["acl_violation"]


def test_daily_spikes(fleet):
    sql = with_params(QUERIES["04_daily_spikes.sql"], first_day="toDate('2026-03-02')", last_day="toDate('2026-03-02')")
    _, rows = run(fleet, sql)
    # Defaults: twice the day before and 1 GB more (or 100000 requests more): only bot_a on the 2nd.
    assert len(rows) == 1
    (row,) = rows
    assert (row["owner"], row["day"]) == ("bot_a", "2026-03-02")
    assert (row["data_out_gb"], row["prev_day_data_out_gb"], row["change_gb"], row["ratio"]) == pytest.approx((3.5, 1.0, 2.5, 3.5))
    # Without thresholds, a day after a day without traffic compares with 0 (ratio NULL).
    _, rows = run(fleet, with_params(sql, spike_ratio="0.0", min_increase_gb="0.0", min_increase_requests="0"))
    assert {row["owner"]: row["ratio"] for row in rows} == {"bot_a": 3.5, "bot_b": None, "usr_c": None, "(unattributed)": None}


def test_revoked_or_acl_violating_usage(fleet):
    _, rows = run(fleet, with_params(QUERIES["05_revoked_or_acl_violating_usage.sql"], **SPAN))
    rows = {(row["owner"], row["credential"], row["flag"]): row for row in rows}
    assert set(rows) == {("bot_a", "cr_a", "acl_violation"), ("bot_b", "cr_b", "credential_deleted")}
    revoked = rows[("bot_b", "cr_b", "credential_deleted")]
    assert (revoked["events"], revoked["requests"], revoked["revoked_at"]) == (2, 1, "2026-03-02 09:00:00")
    acl = rows[("bot_a", "cr_a", "acl_violation")]
    assert acl["revoked_at"] == "" and json.loads(acl["acl"]) == ["bind:*.a.example.com"]


def test_unattributed_by_hostname(fleet):
    _, rows = run(fleet, with_params(QUERIES["06_unattributed_by_hostname.sql"], **SPAN))
    rows = {(row["reason"], row["hostname"], row["port"]): row for row in rows}
    gone = rows[("no_endpoint", "gone.ngrok.app", 443)]
    assert (gone["events"], gone["data_out_gb"], gone["endpoints_on_address"], gone["owners_on_address"]) == (1, 0.4, 1, ["bot_b"])
    assert rows[("unknown_session", "s.ngrok.app", 443)]["requests"] == 1


def test_set_param_edits_only_marked_lines():
    sql = "WITH\n    toDate('2026-01-01') AS month_start, -- param: x\n    month_start AS other\nSELECT 1"
    assert "toDate('2026-02-01') AS month_start, -- param: x" in set_param(sql, "month_start", "toDate('2026-02-01')")
    with pytest.raises(AssertionError):
        set_param(sql, "other", "1")


def test_provisioning_matches_docker_compose():
    """The provisioning files fit the Grafana and ClickHouse services of docker-compose.yml."""
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    grafana, clickhouse = services["grafana"], services["clickhouse"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    (provider,) = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/botmeter.yaml").read_text())["providers"]
    assert provider["type"] == "file" and mounts[provider["options"]["path"]] == "./dashboards"
    (source,) = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/clickhouse.yaml").read_text())["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["type"] in grafana["environment"]["GF_INSTALL_PLUGINS"]
    env = clickhouse["environment"]
    settings = source["jsonData"]
    assert (settings["host"], settings["protocol"], settings["port"]) == ("clickhouse", "http", 8123)
    assert settings["username"] == env["CLICKHOUSE_USER"] and source["secureJsonData"]["password"] == env["CLICKHOUSE_PASSWORD"]
    assert settings["defaultDatabase"] == env["CLICKHOUSE_DB"]
    # Every dashboard reads through its datasource variable, whose type is this plugin.
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == source["type"], path.name
