"""The report SQL of the HTTP API on current ClickHouse, in process (chDB).

crates/query/tests/it/reports.rs runs the same files, with the same rows and the same expected
numbers, against the ClickHouse 18.16 server; this runs them on the ClickHouse that chDB embeds, so every
report query is known to work on both. The SQL is not copied: the files are the ones the Rust crate
embeds with include_str!, and their `?` placeholders are replaced in order by quoted literals, as the
Rust client binds them.
"""

import pytest

from test_migrations_chdb import bind, db, read_sql  # noqa: F401  (db is a fixture)

CREDENTIAL_TYPES = {
    "authtoken": "tunnel_credential",
    "ssh_key": "ssh_public_key",
    "api_key": "api_key",
}


def ts(text):
    """Unix seconds of `YYYY-MM-DD HH:MM:SS` UTC."""
    from datetime import datetime, timezone

    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def usage(event_id, time, endpoint, credential, owner="bot_a", sign=1, status="attributed", **metrics):
    row = {
        "event_id": event_id,
        "event_type": "tcp_connection_closed.v0",
        "event_time": time,
        "event_time_us": ts(time) * 1_000_000,
        "status": status,
        "owner_id": owner,
        "owner_kind": "bot_user",
        "credential_id": credential,
        "endpoint_id": endpoint,
        "hostname": "app.example.com",
        "kafka_topic": "traffic",
        "sign": sign,
    }
    row.update(metrics)
    return row


def control(event_id, event_type, time, object_id, obj, owner_id="", anomalies=(), principal="", api_key=""):
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_time": time,
        "event_time_us": ts(time) * 1_000_000,
        "principal_id": principal,
        "principal_credential_id": api_key,
        "object_id": object_id,
        "owner_id": owner_id,
        "object": obj,
        "kafka_topic": "control",
        "anomalies": list(anomalies),
    }


def credential(event_id, kind, action, time, cred_id, owner, anomalies=(), metadata=""):
    import json

    obj = json.dumps({"id": cred_id, "owner_id": owner, "metadata": metadata}, sort_keys=True, separators=(",", ":"))
    return control(
        event_id, f"{CREDENTIAL_TYPES[kind]}_{action}.v0", time, cred_id, obj, owner, anomalies, principal="usr_admin"
    )


def session(event_id, action, time, session_id, cred_id, started_at=None, stopped_at=None):
    import json

    obj = json.dumps(
        {
            "session": {"id": session_id, "uri": ""},
            "credential": {"id": cred_id, "uri": ""},
            "started_at": started_at,
            "stopped_at": stopped_at,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return control(event_id, f"agent_session_{action}.v0", time, session_id, obj)


# The fleet of crates/query/tests/it/reports.rs, row for row.
USAGE = [
    usage("ev_1", "2024-05-01 09:10:00", "ep_1", "cr_1", bytes_in=100, bytes_out=1000, tcp_connections=1),
    usage("ev_2", "2024-05-01 09:40:00", "ep_1", "cr_1", bytes_in=200, bytes_out=2000, tcp_connections=1),
    usage("ev_3", "2024-05-01 10:05:00", "ep_2", "cr_2", bytes_in=10, bytes_out=0, tcp_connections=1),
    usage("ev_4", "2024-05-01 10:20:00", "ep_2", "cr_2", http_requests=1, event_type="http_request_complete.v0"),
    usage("ev_5", "2024-05-01 10:50:00", "ep_1", "cr_1", bytes_in=1, bytes_out=5, tcp_connections=1),
    usage("ev_6", "2024-05-02 00:30:00", "ep_2", "cr_2", bytes_in=7, bytes_out=70, tcp_connections=1, flags=["owner_inactive"]),
    # A restated row and its cancelling copy: nothing, not even an endpoint.
    usage("ev_r", "2024-05-01 09:20:00", "ep_3", "cr_1", bytes_in=5000, bytes_out=5000, tcp_connections=1),
    usage("ev_r", "2024-05-01 09:20:00", "ep_3", "cr_1", sign=-1, bytes_in=5000, bytes_out=5000, tcp_connections=1),
    # Not counted for bot_a: another owner, unattributed, outside the range.
    usage("ev_b", "2024-05-01 09:10:00", "ep_9", "cr_x", owner="bot_b", bytes_in=9, bytes_out=9, tcp_connections=1,
          flags=["acl_violation", "owner_inactive"]),
    usage("ev_u", "2024-05-01 09:10:00", "", "", owner="", status="unattributed", bytes_out=9, tcp_connections=1,
          unattributed_reason="no_endpoint", hostname="ghost.example.com"),
    usage("ev_u2", "2024-05-01 09:11:00", "", "", owner="", status="unattributed", http_requests=1,
          unattributed_reason="unknown_session", hostname="app.example.com"),
    # Restated: no longer counts as unattributed.
    usage("ev_u3", "2024-05-01 09:12:00", "", "", owner="", status="unattributed", bytes_out=50, tcp_connections=1,
          unattributed_reason="no_endpoint", hostname="late.example.com"),
    usage("ev_u3", "2024-05-01 09:12:00", "", "", owner="", status="unattributed", bytes_out=50, tcp_connections=1,
          unattributed_reason="no_endpoint", hostname="late.example.com", sign=-1),
    usage("ev_d", "2024-05-01 09:13:00", "", "", owner="", status="dead_letter", unattributed_reason="malformed_json",
          event_type=""),
    usage("ev_o", "2024-05-03 00:00:00", "ep_1", "cr_1", bytes_in=9, bytes_out=9, tcp_connections=1),
]

def bot_user(event_id, action, time, bot_id, name, active=True, metadata=None):
    import json

    obj = {"id": bot_id, "name": name, "active": active}
    if metadata is not None:
        obj["metadata"] = metadata
    obj = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return control(event_id, f"bot_user_{action}.v0", time, bot_id, obj, bot_id, principal="usr_admin")


CONTROL = [
    bot_user("ev_b1", "created", "2024-03-01 00:00:00", "bot_a", "payments-ci", metadata='{"customer":"acme"}'),
    bot_user("ev_b2", "updated", "2024-05-01 12:00:00", "bot_a", "payments-ci-2", active=False,
             metadata='{"customer":"acme"}'),
    bot_user("ev_b3", "created", "2024-03-02 00:00:00", "bot_b", "search"),
    bot_user("ev_b4", "deleted", "2024-05-02 00:00:00", "bot_b", ""),
    # Synthesized by `botmeter sync` from the ngrok API (a fleet that existed before botmeter).
    dict(credential("ev_c1", "authtoken", "created", "2024-04-01 00:00:00", "cr_1", "bot_a"), source="botmeter-sync"),
    credential("ev_c2", "ssh_key", "created", "2024-04-01 00:00:00", "cr_2", "bot_a"),
    credential("ev_c3", "api_key", "created", "2024-04-01 00:00:00", "ak_1", "bot_a"),
    credential("ev_c3x", "api_key", "deleted", "2024-05-02 00:00:00", "ak_1", "bot_a"),
    credential("ev_cx", "authtoken", "created", "2024-04-01 00:00:00", "cr_x", "bot_b", metadata='{"customer":"acme"}'),
    # The owner's own actions through the ngrok API, one with a key it does not own.
    control("ev_a1", "domain_created.v0", "2024-05-01 10:00:00", "rd_1", '{"id":"rd_1"}', principal="bot_a",
            api_key="ak_1"),
    control("ev_a2", "domain_deleted.v0", "2024-05-01 11:00:00", "rd_1", '{"id":"rd_1"}', principal="bot_a",
            api_key="ak_9", anomalies=["api_key_owner_mismatch"]),
    # An attempt to move cr_1 to bot_b: recorded, never an owner.
    credential("ev_c4", "authtoken", "updated", "2024-05-01 08:00:00", "cr_1", "bot_b", anomalies=["owner_change_rejected"]),
    session("ev_s1", "start", "2024-05-01 09:15:00", "ts_1", "cr_1"),
    session("ev_s1x", "stop", "2024-05-01 10:45:00", "ts_1", "cr_1"),
    session("ev_s2", "start", "2024-05-01 23:30:00", "ts_2", "cr_2"),
    session("ev_s2x", "stop", "2024-05-02 01:00:00", "ts_2", "cr_2"),
    # Still open at `to`.
    session("ev_s3", "start", "2024-05-02 23:00:00", "ts_3", "cr_1"),
    # Started before `from`.
    session("ev_s4", "start", "2024-04-30 23:00:00", "ts_old", "cr_1"),
    session("ev_s4x", "stop", "2024-05-01 00:30:00", "ts_old", "cr_1"),
    # Only its stop is known: the start comes from started_at.
    session("ev_s5x", "stop", "2024-05-01 12:00:00", "ts_stoponly", "cr_2", started_at="2024-05-01T11:00:00Z"),
    # Stopped before `from`; another owner; started after `to`.
    session("ev_s6", "start", "2024-04-20 00:00:00", "ts_gone", "cr_1"),
    session("ev_s6x", "stop", "2024-04-20 01:00:00", "ts_gone", "cr_1"),
    session("ev_s7", "start", "2024-05-01 09:00:00", "ts_b", "cr_x"),
    session("ev_s8", "start", "2024-05-03 00:00:00", "ts_late", "cr_1"),
]

FROM = ts("2024-05-01 00:00:00")
TO = ts("2024-05-03 00:00:00")


@pytest.fixture(params=["", "_rollup"], ids=["raw", "rollup"])
def fleet(db, request):  # noqa: F811
    """The fleet, and which usage SQL to read it with: the raw rows (`usage_buckets.sql`,
    `owner_totals.sql`) or the rollup the materialized view fed (`*_rollup.sql`). Every expected
    number below holds for both."""
    db.insert("usage_events", USAGE)
    db.insert("control_events_log", CONTROL)
    db.usage_sql_suffix = request.param
    return db


def buckets(db, tz, granularity, group="", owners=("bot_a",), credentials=()):
    sql = bind(
        read_sql(f"usage_buckets{db.usage_sql_suffix}.sql"), tz, granularity, group, list(owners), list(credentials), "attributed", FROM, TO
    )
    types, rows = db.rows(sql)
    assert types == ["UInt32", "String"] + ["UInt64"] * 6
    return rows


def test_usage_hourly_utc(fleet):
    assert buckets(fleet, "UTC", "hour") == [
        [ts("2024-05-01 09:00:00"), "", 300, 3000, 0, 2, 1, 1],
        [ts("2024-05-01 10:00:00"), "", 11, 5, 1, 2, 2, 1],
        [ts("2024-05-02 00:00:00"), "", 7, 70, 0, 1, 1, 1],
    ]
    assert buckets(fleet, "UTC", "all") == [[0, "", 318, 3075, 1, 5, 2, 3]]


def test_usage_in_a_half_hour_zone(fleet):
    # Asia/Kolkata is UTC+05:30: local hours start at :30 UTC, so ep_1 is active in three of them.
    assert buckets(fleet, "Asia/Kolkata", "hour") == [
        [ts("2024-05-01 08:30:00"), "", 100, 1000, 0, 1, 1, 1],
        [ts("2024-05-01 09:30:00"), "", 210, 2000, 1, 2, 2, 1],
        [ts("2024-05-01 10:30:00"), "", 1, 5, 0, 1, 1, 1],
        [ts("2024-05-02 00:30:00"), "", 7, 70, 0, 1, 1, 1],
    ]
    assert buckets(fleet, "Asia/Kolkata", "day") == [
        [ts("2024-04-30 18:30:00"), "", 311, 3005, 1, 4, 2, 3],
        [ts("2024-05-01 18:30:00"), "", 7, 70, 0, 1, 1, 1],
    ]
    assert buckets(fleet, "Asia/Kolkata", "month") == [[ts("2024-04-30 18:30:00"), "", 318, 3075, 1, 5, 2, 4]]
    assert buckets(fleet, "America/New_York", "day") == [
        [ts("2024-05-01 04:00:00"), "", 318, 3075, 1, 5, 2, 3],
    ]


def test_usage_grouped(fleet):
    assert buckets(fleet, "UTC", "all", "credential") == [
        [0, "cr_1", 301, 3005, 0, 3, 1, 2],
        [0, "cr_2", 17, 70, 1, 2, 1, 1],
    ]
    assert buckets(fleet, "UTC", "day", "endpoint") == [
        [ts("2024-05-01 00:00:00"), "ep_1", 301, 3005, 0, 3, 1, 2],
        [ts("2024-05-01 00:00:00"), "ep_2", 10, 0, 1, 1, 1, 0],
        [ts("2024-05-02 00:00:00"), "ep_2", 7, 70, 0, 1, 1, 1],
    ]
    # (credential, endpoint) pairs, for the overage drill-down; ep_3's restated pair nets to nothing.
    assert buckets(fleet, "UTC", "all", "credential_endpoint") == [
        [0, "cr_1 ep_1", 301, 3005, 0, 3, 1, 2],
        [0, "cr_2 ep_2", 17, 70, 1, 2, 1, 1],
    ]
    # By credential list instead of owner (a customer's credentials).
    assert buckets(fleet, "UTC", "all", owners=(), credentials=("cr_2", "cr_x")) == [[0, "", 26, 79, 1, 3, 2, 2]]
    assert buckets(fleet, "UTC", "all", owners=()) == []
    # Bound strings are values, never SQL.
    assert buckets(fleet, "UTC", "all", owners=("bot_a' OR 1=1 --",)) == []


def sessions(db, all_owners=0, owners=("bot_a",), credentials=()):
    sql = bind(read_sql("agent_sessions.sql"), TO, all_owners, list(owners), list(credentials), FROM * 1_000_000)
    types, rows = db.rows(sql)
    assert types == ["String", "String", "String", "UInt64", "Int64", "UInt64", "Int64", "String"]
    return rows


def test_agent_sessions(fleet):
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    assert sessions(fleet) == [
        ["ts_1", "cr_1", "bot_a", 1, us("2024-05-01 09:15:00"), 1, us("2024-05-01 10:45:00"), ""],
        ["ts_2", "cr_2", "bot_a", 1, us("2024-05-01 23:30:00"), 1, us("2024-05-02 01:00:00"), ""],
        ["ts_3", "cr_1", "bot_a", 1, us("2024-05-02 23:00:00"), 0, 0, ""],
        ["ts_old", "cr_1", "bot_a", 1, us("2024-04-30 23:00:00"), 1, us("2024-05-01 00:30:00"), ""],
        ["ts_stoponly", "cr_2", "bot_a", 0, 0, 1, us("2024-05-01 12:00:00"), "2024-05-01T11:00:00Z"],
    ]
    everyone = sessions(fleet, all_owners=1, owners=())
    assert [(row[0], row[2]) for row in everyone] == [
        ("ts_1", "bot_a"),
        ("ts_2", "bot_a"),
        ("ts_3", "bot_a"),
        ("ts_b", "bot_b"),
        ("ts_old", "bot_a"),
        ("ts_stoponly", "bot_a"),
    ]
    assert [row[0] for row in sessions(fleet, owners=(), credentials=("cr_2",))] == ["ts_2", "ts_stoponly"]
    assert sessions(fleet, owners=("bot_a' OR 1=1 --",)) == []


def catalog(db, name, *values):
    return db.rows(bind(read_sql(name), *values))


def test_credentials_catalog(fleet):
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    types, rows = catalog(fleet, "credentials_catalog.sql", 1, [], [])
    assert types == ["String"] * 4 + ["Int64", "Int64", "UInt8", "String"]
    assert rows == [
        ["ak_1", "api_key", "bot_a", "", us("2024-04-01 00:00:00"), us("2024-05-02 00:00:00"), 0, ""],
        ["cr_1", "authtoken", "bot_a", "", us("2024-04-01 00:00:00"), 0, 0, ""],
        ["cr_2", "ssh_key", "bot_a", "", us("2024-04-01 00:00:00"), 0, 0, ""],
        # bot_b was deleted on 2024-05-02 with no deletion of cr_x: deleting a bot revokes its
        # credentials.
        ["cr_x", "authtoken", "bot_b", "", us("2024-04-01 00:00:00"), us("2024-05-02 00:00:00"), 1, "ev_b4"],
    ]
    # A customer's credentials are its bots': cr_x, whose metadata names acme, is bot_b's.
    _, rows = catalog(fleet, "credentials_catalog.sql", 0, ["bot_a"], [])
    assert [r[0] for r in rows] == ["ak_1", "cr_1", "cr_2"]
    _, rows = catalog(fleet, "credentials_catalog.sql", 0, [], ["cr_2"])
    assert [r[0] for r in rows] == ["cr_2"]
    _, rows = catalog(fleet, "credentials_catalog.sql", 0, ["bot_a' OR 1=1 --"], [])
    assert rows == []


def test_credential_hygiene(fleet):
    """credential_hygiene.sql as of `TO` and as of 2024-05-01 10:00, on the fleet above: cr_1's
    restated ev_r is no use (its last use is ev_o at `TO`, excluded: ev_5), cr_2's ev_6 is flagged
    owner_inactive, cr_x (revoked with bot_b) acl_violation and owner_inactive."""
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    sql = read_sql("credential_hygiene.sql")
    types, rows = fleet.rows(bind(sql, TO * 1_000_000, TO * 1_000_000, 1, [], TO, 1, []))
    assert types == ["String"] * 4 + ["Int64", "Int64", "UInt8", "Int64", "Int64", "Int64"]
    objects = {r[0]: r[3] for r in rows}
    assert objects["cr_x"] == '{"id":"cr_x","metadata":"{\\"customer\\":\\"acme\\"}","owner_id":"bot_b"}'
    assert [r[:3] + r[4:] for r in rows] == [
        ["ak_1", "api_key", "bot_a", us("2024-04-01 00:00:00"), us("2024-05-02 00:00:00"), 0, 0, 0, 0],
        ["cr_1", "authtoken", "bot_a", us("2024-04-01 00:00:00"), 0, 0, us("2024-05-01 10:50:00"), 0, 0],
        ["cr_2", "ssh_key", "bot_a", us("2024-04-01 00:00:00"), 0, 0, us("2024-05-02 00:30:00"), 0, 1],
        ["cr_x", "authtoken", "bot_b", us("2024-04-01 00:00:00"), us("2024-05-02 00:00:00"), 1,
         us("2024-05-01 09:10:00"), 1, 1],
    ]
    # Earlier: no deletion yet, usage before 10:00 only; bot_a's credentials only.
    at = ts("2024-05-01 10:00:00")
    _, rows = fleet.rows(bind(sql, at * 1_000_000, at * 1_000_000, 0, ["bot_a"], at, 0, ["bot_a"]))
    assert [[r[0], r[5], r[6], r[7]] for r in rows] == [
        ["ak_1", 0, 0, 0],
        ["cr_1", 0, 0, us("2024-05-01 09:40:00")],
        ["cr_2", 0, 0, 0],
    ]
    _, rows = fleet.rows(bind(sql, at * 1_000_000, at * 1_000_000, 0, ["bot_a' OR 1=1 --"], at, 0, []))
    assert rows == []


def test_bot_users_catalog(fleet):
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    types, rows = catalog(fleet, "bot_users_catalog.sql", 1, [])
    assert types == ["String", "String", "UInt8", "UInt8", "Int64", "Int64"]
    assert rows == [
        ["bot_a", "payments-ci-2", 0, 0, us("2024-03-01 00:00:00"), 0],
        ["bot_b", "search", 0, 1, us("2024-03-02 00:00:00"), us("2024-05-02 00:00:00")],
    ]
    _, rows = catalog(fleet, "bot_users_catalog.sql", 0, ["bot_b"])
    assert [r[0] for r in rows] == ["bot_b"]


def test_bot_user_metadata_versions(fleet):
    """Each bot user's versions in force during a range: the one in force at its start, then each
    created or updated event inside it, with the time it is in force from."""
    import json

    us = lambda text: ts(text) * 1_000_000  # noqa: E731

    def versions(lo, hi):
        types, rows = catalog(fleet, "bot_user_metadata.sql", us(lo), us(lo), us(hi))
        assert types == ["String", "Int64", "String"]
        return [(r[0], r[1], json.loads(r[2])["name"]) for r in rows]

    # bot_a changed at 12:00 on May 1; bot_b's deletion is no version.
    assert versions("2024-05-01 00:00:00", "2024-06-01 00:00:00") == [
        ("bot_a", us("2024-03-01 00:00:00"), "payments-ci"),
        ("bot_a", us("2024-05-01 12:00:00"), "payments-ci-2"),
        ("bot_b", us("2024-03-02 00:00:00"), "search"),
    ]
    _, rows = catalog(fleet, "bot_user_metadata.sql", us("2024-05-01 00:00:00"), us("2024-05-01 00:00:00"),
                      us("2024-06-01 00:00:00"))
    assert json.loads(json.loads(rows[0][2])["metadata"]) == {"customer": "acme"}
    # A version at the range's start is the one in force there; `to` is exclusive.
    assert versions("2024-05-01 12:00:00", "2024-06-01 00:00:00") == [
        ("bot_a", us("2024-05-01 12:00:00"), "payments-ci-2"),
        ("bot_b", us("2024-03-02 00:00:00"), "search"),
    ]
    assert versions("2024-04-01 00:00:00", "2024-05-01 12:00:00") == [
        ("bot_a", us("2024-03-01 00:00:00"), "payments-ci"),
        ("bot_b", us("2024-03-02 00:00:00"), "search"),
    ]
    # Nothing exists before the first event; one created inside the range is listed from then.
    assert versions("2024-01-01 00:00:00", "2024-03-01 00:00:00") == []
    assert versions("2024-02-01 00:00:00", "2024-03-02 00:00:01") == [
        ("bot_a", us("2024-03-01 00:00:00"), "payments-ci"),
        ("bot_b", us("2024-03-02 00:00:00"), "search"),
    ]


def test_principals(fleet):
    types, rows = catalog(fleet, "principals.sql")
    assert types == ["String", "String"]
    assert rows == [["bot_a", ""], ["bot_b", ""], ["usr_admin", ""]]


def test_owner_totals(fleet):
    sql = read_sql(f"owner_totals{fleet.usage_sql_suffix}.sql")
    types, rows = fleet.rows(bind(sql, "bytes_in", "attributed", FROM, TO, 10))
    assert types == ["String", "String"] + ["UInt64"] * 6
    assert rows == [
        ["bot_a", "bot_user", 318, 3075, 1, 5, 2, 3],
        ["bot_b", "bot_user", 9, 9, 0, 1, 1, 1],
    ]
    _, rows = fleet.rows(bind(sql, "active_endpoint_hours", "attributed", FROM, TO, 1))
    assert [r[0] for r in rows] == ["bot_a"]
    # Ties rank by owner id.
    _, rows = fleet.rows(bind(sql, "http_requests", "attributed", FROM, TO, 5))
    assert [r[0] for r in rows] == ["bot_a", "bot_b"]


def test_owner_totals_ranked_from_the_daily_rollup(fleet):
    # FROM and TO are whole UTC days: the API ranks from usage_rollup_daily, same answer.
    raw = read_sql("owner_totals.sql")
    top = read_sql("owner_totals_top.sql")
    for metric in ("bytes_in", "bytes_out", "http_requests", "tcp_connections"):
        for limit in (10, 1):
            types, rows = fleet.rows(
                bind(top, metric, "attributed", FROM, TO, "attributed", FROM, TO, metric, metric, metric, limit, limit)
            )
            assert types == ["String", "String"] + ["UInt64"] * 6
            _, want = fleet.rows(bind(raw, metric, "attributed", FROM, TO, limit))
            assert rows == want, (metric, limit)
            assert rows, (metric, limit)


def test_anomalies(fleet):
    types, rows = fleet.rows(bind(read_sql("flagged_usage.sql"), "attributed", FROM, TO))
    assert types == ["String", "String", "Int64"] + ["UInt64"] * 4
    assert rows == [
        ["acl_violation", "bot_b", 1, 9, 9, 0, 1],
        ["owner_inactive", "bot_a", 1, 7, 70, 0, 1],
        ["owner_inactive", "bot_b", 1, 9, 9, 0, 1],
    ]
    types, rows = fleet.rows(bind(read_sql("unresolved_usage.sql"), "unattributed", FROM, TO))
    assert types == ["String", "String", "UInt16", "Int64"] + ["UInt64"] * 4
    assert rows == [
        ["no_endpoint", "ghost.example.com", 0, 1, 0, 9, 0, 1],
        ["unknown_session", "", 0, 1, 0, 0, 1, 0],
    ]
    _, rows = fleet.rows(bind(read_sql("unresolved_usage.sql"), "dead_letter", FROM, TO))
    assert rows == [["malformed_json", "", 0, 1, 0, 0, 0, 0]]
    types, rows = fleet.rows(bind(read_sql("control_anomalies.sql"), FROM, TO, 100))
    assert [r[0] for r in rows] == ["ev_a2", "ev_c4"]
    assert rows[0][3:] == ["api_key_owner_mismatch", "bot_a", "ak_9", "rd_1", ""]
    assert rows[1][3:] == ["owner_change_rejected", "usr_admin", "", "cr_1", "bot_b"]


def test_audit(fleet):
    sql = read_sql("audit_events.sql")
    ids = ["bot_a", "cr_1", "cr_2", "ak_1"]
    types, rows = fleet.rows(bind(sql, ids, ids, ids, ids, 0, 4294967295, 1000))
    assert types[:3] == ["String", "String", "Int64"] and types[-2:] == ["Array(String)", "String"]
    # `source`: empty for ngrok's own events, `botmeter-sync` for what `botmeter sync` made.
    assert {r[0]: r[-1] for r in rows}["ev_c1"] == "botmeter-sync"
    assert {r[0]: r[-1] for r in rows}["ev_b1"] == ""
    assert [r[0] for r in rows] == ["ev_b1", "ev_c1", "ev_c2", "ev_c3", "ev_c4", "ev_a1", "ev_a2", "ev_b2", "ev_c3x"]
    _, rows = fleet.rows(bind(sql, ["ak_1"], ["ak_1"], ["ak_1"], ["ak_1"], FROM, TO, 1000))
    assert [r[0] for r in rows] == ["ev_a1", "ev_c3x"]
    types, rows = fleet.rows(bind(read_sql("credential_use.sql"), ["cr_1", "cr_2", "ak_1"], "attributed", 0, 4294967295))
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    assert types == ["String", "Int64", "Int64", "Int64"]
    assert rows == [
        ["cr_1", us("2024-05-01 09:10:00"), us("2024-05-03 00:00:00"), 4],
        ["cr_2", us("2024-05-01 10:05:00"), us("2024-05-02 00:30:00"), 3],
    ]


def test_ragged_range_reads_the_rollup_middle_and_raw_edges(db):  # noqa: F811
    # usage_buckets_ragged.sql: the whole quarter hours of a range from the rollup, the ragged edges
    # from the raw rows. The same numbers as usage_buckets.sql over the whole range; ev_1 (09:10) and
    # ev_6 (00:30) sit in the edges, ev_2..ev_5 in the middle, and ev_1's hour mixes both.
    db.insert("usage_events", USAGE)
    lo, hi = ts("2024-05-01 09:07:00"), ts("2024-05-02 00:40:00")
    mid_lo, mid_hi = ts("2024-05-01 09:15:00"), ts("2024-05-02 00:30:00")
    raw_sql, ragged_sql = read_sql("usage_buckets.sql"), read_sql("usage_buckets_ragged.sql")
    for tz, granularity, group in [
        ("UTC", "hour", ""),
        ("UTC", "all", ""),
        ("Asia/Kolkata", "hour", "endpoint"),
        ("Asia/Kathmandu", "day", "credential"),
        ("UTC", "all", "credential_endpoint"),
    ]:
        owners, creds = ["bot_a"], []
        raw = db.rows(bind(raw_sql, tz, granularity, group, owners, creds, "attributed", lo, hi))
        ragged = db.rows(
            bind(
                ragged_sql, tz, granularity, group,
                tz, owners, creds, "attributed", lo, mid_lo, mid_hi, hi,
                tz, owners, creds, "attributed", mid_lo, mid_hi,
            )
        )
        assert ragged == raw, (tz, granularity, group)
        assert raw[1], (tz, granularity, group)


def test_recent_event_ids_rebuild_the_repeat_window(db):  # noqa: F811
    # recent_event_ids.sql: the ids written within the window of the topic's newest event time,
    # netting to one row (a restated event once; duplicates and dead letters never), newest first.
    def row(event_id, time, status="attributed", sign=1, topic="traffic", offset=0):
        out = usage(event_id, time, "ep_1", "cr_1", status=status, sign=sign)
        out.update(kafka_topic=topic, kafka_partition=1, kafka_offset=offset)
        return out

    db.insert("usage_events", [
        row("ev_old", "2024-05-01 08:59:59", offset=1),
        row("ev_edge", "2024-05-01 09:00:00", offset=2),
        row("ev_new", "2024-05-01 10:00:00", offset=3),
        # Restated: the original, its cancelling copy and the new row, one net row.
        row("ev_restated", "2024-05-01 09:30:00", status="unattributed", offset=4),
        row("ev_restated", "2024-05-01 09:30:00", status="unattributed", sign=-1, offset=4),
        row("ev_restated", "2024-05-01 09:30:00", offset=4),
        row("ev_new", "2024-05-01 10:00:00", status="duplicate", offset=5),
        row("", "2024-05-01 10:00:00", status="dead_letter", offset=6),
        row("ev_other_topic", "2024-05-01 11:00:00", topic="elsewhere", offset=7),
    ])
    sql = read_sql("recent_event_ids.sql")
    types, rows = db.rows(bind(sql, "traffic", "traffic", 3600, 100))
    assert types == ["String", "Int64", "Int32", "Int64"]
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    assert rows == [
        ["ev_new", us("2024-05-01 10:00:00"), 1, 3],
        ["ev_restated", us("2024-05-01 09:30:00"), 1, 4],
        ["ev_edge", us("2024-05-01 09:00:00"), 1, 2],
    ]
    _, rows = db.rows(bind(sql, "traffic", "traffic", 3600, 2))
    assert [r[0] for r in rows] == ["ev_new", "ev_restated"]


def test_reconcile_traffic_counts_repeats_apart(db):  # noqa: F811
    # reconcile_traffic.sql: a repeated delivery is a message of its own (its position nets to one
    # row) counted under window_repeated, not as attributed.
    def row(event_id, offset, status="attributed", sign=1):
        out = usage(event_id, "2024-05-01 10:00:00", "ep_1", "cr_1", status=status, sign=sign)
        out.update(kafka_partition=0, kafka_offset=offset)
        return out

    db.insert("usage_events", [
        row("ev_1", 0),
        row("ev_2", 1, status="unattributed"),
        row("ev_1", 2, status="duplicate"),
        row("", 3, status="dead_letter"),
    ])
    types, rows = db.rows(bind(read_sql("reconcile_traffic.sql"), 0, 4294967295, "traffic", "traffic"))
    assert types[-5:] == ["Int64"] * 5
    assert rows == [[0, 4, 0, 3, 0, 0, [], 1, 1, 0, 1, 1]]


def test_usage_by_metadata_value(db):  # noqa: F811
    # usage_buckets_metadata.sql: cr_1 is at s3 until 10:30 then s4 (spans), cr_2 at s3 throughout
    # (looked up), cr_3 has no value ((none)); ep_1 is an endpoint-hour of s3 and of s4 at 10:00.
    db.insert("usage_events", [
        usage("ev_1", "2024-05-01 10:00:00", "ep_1", "cr_1", owner="bot_m", bytes_out=1),
        usage("ev_2", "2024-05-01 10:50:00", "ep_1", "cr_1", owner="bot_m", bytes_out=10),
        usage("ev_3", "2024-05-01 11:10:00", "ep_1", "cr_1", owner="bot_m", bytes_out=100),
        usage("ev_4", "2024-05-01 10:20:00", "ep_2", "cr_2", owner="bot_m", bytes_out=1000),
        usage("ev_5", "2024-05-01 10:40:00", "ep_3", "cr_3", owner="bot_m", bytes_out=10000),
    ])
    us = lambda text: ts(text) * 1_000_000  # noqa: E731
    lo, hi = ts("2024-05-01 00:00:00"), ts("2024-05-02 00:00:00")
    sql = read_sql("usage_buckets_metadata.sql")
    types, rows = db.rows(bind(
        sql, "UTC", "all",
        "UTC", ["cr_2"], ["s3"], ["cr_2"], ["bot_m"], [], ["cr_1"], "attributed", lo, hi,
        "UTC", ["bot_m"], [], ["cr_1"], "attributed", lo, hi,
        ["cr_1", "cr_1"], [us("2024-05-01 00:00:00"), us("2024-05-01 10:30:00")],
        [us("2024-05-01 10:30:00"), us("2024-05-02 00:00:00")], ["s3", "s4"],
    ))
    assert types == ["UInt32", "String"] + ["UInt64"] * 6
    assert rows == [
        [0, "(none)", 0, 10000, 0, 0, 1, 1],
        [0, "s3", 0, 1001, 0, 0, 2, 2],
        [0, "s4", 0, 110, 0, 0, 1, 2],
    ]
    db.insert("control_events_log", [
        credential("ev_c1", "authtoken", "created", "2024-04-01 00:00:00", "cr_1", "bot_m", metadata='{"site":"s3"}'),
        credential("ev_c1u", "authtoken", "updated", "2024-05-01 10:30:00", "cr_1", "bot_m", metadata='{"site":"s4"}'),
    ])
    types, rows = db.rows(bind(read_sql("credential_metadata.sql"), ["cr_1"], us("2024-05-02 00:00:00")))
    assert types == ["String", "Int64", "String"]
    assert [(r[0], r[1]) for r in rows] == [("cr_1", us("2024-04-01 00:00:00")), ("cr_1", us("2024-05-01 10:30:00"))]
    assert '\\"site\\":\\"s4\\"' in rows[1][2] or '"site":"s4"' in rows[1][2], rows[1][2]


def spans_buckets(db, tz, granularity, group, lo, hi, owners=(), credentials=(), partial=()):
    """usage_buckets_spans.sql, bound as crates/query/src/api/report.rs binds it: `partial` lists
    (owner, its spans as (from, to) Unix seconds)."""
    aligned_lo, aligned_hi = -(-lo // 900) * 900, hi // 900 * 900
    if lo % 900 == 0 and hi % 900 == 0:
        mid_lo, mid_hi = lo, hi
    elif aligned_lo < aligned_hi:
        mid_lo, mid_hi = aligned_lo, aligned_hi
    else:
        mid_lo, mid_hi = lo, lo
    owners, credentials = list(owners), list(credentials)
    spans = [(owner, a * 1_000_000, b * 1_000_000) for owner, owner_spans in partial for a, b in owner_spans]
    span_columns = [[s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]]
    cut = sorted({end // 900 * 900 for _, owner_spans in partial for span in owner_spans for end in span if end % 900})
    partial_owners = [owner for owner, _ in partial]
    types, rows = db.rows(
        bind(
            read_sql("usage_buckets_spans.sql"), tz, granularity, group,
            tz, owners, credentials, "attributed", lo, mid_lo, mid_hi, hi,
            tz, owners, credentials, "attributed", mid_lo, mid_hi,
            tz, partial_owners, owners, credentials, "attributed", lo, hi, cut, *span_columns,
            tz, partial_owners, owners, credentials, "attributed", lo, hi, *span_columns,
        )
    )
    assert types == ["UInt32", "String"] + ["UInt64"] * 6
    return rows


def test_spans_count_an_owner_while_it_is_in_scope(db):  # noqa: F811
    # usage_buckets_spans.sql: owners counted over the whole range as usage_buckets_ragged.sql
    # counts them, plus owners counted within spans, from the raw rows, summed before counting.
    db.insert("usage_events", USAGE)
    raw_sql = read_sql("usage_buckets.sql")
    cases = [
        ("UTC", "hour", ""),
        ("UTC", "all", ""),
        ("Asia/Kolkata", "hour", "endpoint"),
        ("Asia/Kathmandu", "day", "credential"),
        ("UTC", "all", "credential_endpoint"),
    ]
    for lo, hi in [(FROM, TO), (ts("2024-05-01 09:07:00"), ts("2024-05-02 00:40:00")),
                   (ts("2024-05-01 09:07:00"), ts("2024-05-01 09:14:00"))]:
        for tz, granularity, group in cases:
            raw = db.rows(bind(raw_sql, tz, granularity, group, ["bot_a"], [], "attributed", lo, hi))
            # Whole-range owners alone, with or without an empty span list; a span over the range.
            assert spans_buckets(db, tz, granularity, group, lo, hi, owners=["bot_a"]) == raw[1]
            assert spans_buckets(db, tz, granularity, group, lo, hi, partial=[("bot_a", [(lo, hi)])]) == raw[1]
            assert spans_buckets(db, tz, granularity, group, lo, hi, owners=["bot_a"],
                                 partial=[("bot_a", [(lo, hi)])]) == raw[1], "never twice"
            assert spans_buckets(db, tz, granularity, group, lo, hi, credentials=["cr_1", "cr_2"],
                                 partial=[("bot_a", [(lo, hi)])]) == raw[1], "never twice"
    # bot_a moves at 09:30 on May 1, inside ep_1's hour: each side counts its rows, ep_1's hour once.
    change = ts("2024-05-01 09:30:00")
    before = spans_buckets(db, "UTC", "hour", "", FROM, TO, partial=[("bot_a", [(FROM, change)])])
    after = spans_buckets(db, "UTC", "hour", "", FROM, TO, partial=[("bot_a", [(change, TO)])])
    assert before == [[ts("2024-05-01 09:00:00"), "", 100, 1000, 0, 1, 1, 1]]
    assert after == [
        [ts("2024-05-01 09:00:00"), "", 200, 2000, 0, 1, 1, 1],
        [ts("2024-05-01 10:00:00"), "", 11, 5, 1, 2, 2, 1],
        [ts("2024-05-02 00:00:00"), "", 7, 70, 0, 1, 1, 1],
    ]
    assert spans_buckets(db, "UTC", "all", "", FROM, TO, partial=[("bot_a", [(FROM, change)])]) == [
        [0, "", 100, 1000, 0, 1, 1, 1]
    ]
    # Two spans of one owner; a row at a span's end belongs to the next version.
    assert spans_buckets(db, "UTC", "all", "", FROM, TO, partial=[
        ("bot_a", [(FROM, ts("2024-05-01 09:10:00")), (ts("2024-05-01 09:40:00"), ts("2024-05-01 10:06:00"))])
    ]) == [[0, "", 210, 2000, 0, 2, 2, 1]]
    # With bot_b over the whole range and bot_a from 10:10, ep_2's 10:00 hour (bot_a's ev_4) is
    # counted once and bot_b's 09:00 row whole.
    assert spans_buckets(db, "UTC", "hour", "", FROM, TO, owners=["bot_b"],
                         partial=[("bot_a", [(ts("2024-05-01 10:10:00"), TO)])]) == [
        [ts("2024-05-01 09:00:00"), "", 9, 9, 0, 1, 1, 1],
        [ts("2024-05-01 10:00:00"), "", 1, 5, 1, 1, 2, 1],
        [ts("2024-05-02 00:00:00"), "", 7, 70, 0, 1, 1, 1],
    ]
    assert spans_buckets(db, "UTC", "all", "", FROM, TO, partial=[("bot_a' OR 1=1 --", [(FROM, TO)])]) == []
