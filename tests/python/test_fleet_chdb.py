"""The fleet SQL of `/v1/fleet` (crates/query/sql/fleet_*.sql) on current ClickHouse, in process
(chDB). crates/query/tests/it/fleet.rs runs the same files on the same rows against the ClickHouse
18.16 server with the same expected rows, so the queries are known to work on both."""

import json

from test_migrations_chdb import db, read_sql  # noqa: F401  (db is a fixture)
from test_reports_chdb import bind, control, credential, session, ts, usage


def us(text):
    return ts(text) * 1_000_000


def start(event_id, time, session_id, cred_id, region="eu", os="linux", agent="ngrok/3.18.4"):
    obj = json.dumps(
        {
            "session": {"id": session_id, "uri": ""},
            "credential": {"id": cred_id, "uri": ""},
            "region": region,
            "os": os,
            "user_agent": agent,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return control(event_id, "agent_session_start.v0", time, session_id, obj)


def endpoint(event_id, action, time, endpoint_id, session_id=None):
    obj = {"id": endpoint_id, "region": "us"}
    if session_id is not None:
        obj["tunnel_session"] = {"id": session_id, "uri": ""}
    obj = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return control(event_id, f"endpoint_{action}.v0", time, endpoint_id, obj)


def bot_deleted(event_id, time, bot_id):
    return control(event_id, "bot_user_deleted.v0", time, bot_id, json.dumps({"id": bot_id}), bot_id)


# cr_1 (bot_a): online with ts_1 (two endpoints, one deleted) from 09:00, dropped 10:00 to 11:00
# (ts_1 stops), back with ts_2 at 11:00. cr_2 (bot_a, SSH key): never seen. cr_3 (usr_b): ts_3
# 09:30 to 09:45, traffic at 09:50. cr_4 (bot_c): deleted with its bot at 12:00. ak_1: an API key,
# never in the fleet. cr_5: deleted itself at 10:30.
CONTROL = [
    credential("ev_c1", "authtoken", "created", "2024-05-01 08:00:00", "cr_1", "bot_a"),
    credential("ev_c2", "ssh_key", "created", "2024-05-01 08:00:00", "cr_2", "bot_a"),
    credential("ev_c3", "authtoken", "created", "2024-05-01 08:00:00", "cr_3", "usr_b"),
    credential("ev_c4", "authtoken", "created", "2024-05-01 08:00:00", "cr_4", "bot_c"),
    credential("ev_c5", "authtoken", "created", "2024-05-01 08:00:00", "cr_5", "bot_a"),
    credential("ev_c5x", "authtoken", "deleted", "2024-05-01 10:30:00", "cr_5", "bot_a"),
    credential("ev_k1", "api_key", "created", "2024-05-01 08:00:00", "ak_1", "bot_a"),
    # An attempt to move cr_1 to usr_b: recorded, never an owner.
    credential("ev_c1m", "authtoken", "updated", "2024-05-01 08:30:00", "cr_1", "usr_b", anomalies=["owner_change_rejected"]),
    bot_deleted("ev_bc", "2024-05-01 12:00:00", "bot_c"),
    start("ev_s1", "2024-05-01 09:00:00", "ts_1", "cr_1", region="us", os="darwin"),
    endpoint("ev_e1", "created", "2024-05-01 09:00:01", "ep_1", "ts_1"),
    endpoint("ev_e2", "created", "2024-05-01 09:00:02", "ep_2", "ts_1"),
    endpoint("ev_e2x", "deleted", "2024-05-01 09:30:00", "ep_2"),
    session("ev_s1x", "stop", "2024-05-01 10:00:00", "ts_1", "cr_1"),
    start("ev_s2", "2024-05-01 11:00:00", "ts_2", "cr_1", agent="SSH-2.0-OpenSSH_9.6"),
    endpoint("ev_e3", "created", "2024-05-01 11:00:01", "ep_3", "ts_2"),
    start("ev_s3", "2024-05-01 09:30:00", "ts_3", "cr_3"),
    session("ev_s3x", "stop", "2024-05-01 09:45:00", "ts_3", "cr_3"),
    start("ev_s4", "2024-05-01 09:00:00", "ts_4", "cr_4"),
    # A stop whose start was never seen: not a session of cr_2.
    session("ev_s5x", "stop", "2024-05-01 09:00:00", "ts_5", "cr_2"),
]

USAGE = [
    usage("ev_1", "2024-05-01 09:20:00", "ep_1", "cr_1", bytes_out=10, tcp_connections=1),
    usage("ev_2", "2024-05-01 09:50:00", "ep_9", "cr_3", owner="usr_b", bytes_out=10, tcp_connections=1),
    # Restated (a -1 copy): its +1 row still counts as traffic.
    usage("ev_r", "2024-05-01 09:55:00", "ep_1", "cr_1", bytes_out=10, tcp_connections=1),
    usage("ev_r", "2024-05-01 09:55:00", "ep_1", "cr_1", sign=-1, bytes_out=10, tcp_connections=1),
    # Restated with the same credential (a flag changed): still traffic at 09:56.
    usage("ev_f", "2024-05-01 09:56:00", "ep_1", "cr_1", bytes_out=10, tcp_connections=1),
    usage("ev_f", "2024-05-01 09:56:00", "ep_1", "cr_1", sign=-1, bytes_out=10, tcp_connections=1),
    usage("ev_f", "2024-05-01 09:56:00", "ep_1", "cr_1", bytes_out=10, tcp_connections=1, flags=["acl_violation"]),
    usage("ev_u", "2024-05-01 09:57:00", "", "", owner="", status="unattributed", bytes_out=9, tcp_connections=1),
]


def fleet_db(db):  # noqa: F811
    db.insert("control_events_log", CONTROL)
    db.insert("usage_events", USAGE)
    return db


def credentials(db, at, all_owners=1, owners=()):
    types, rows = db.rows(bind(read_sql("fleet_credentials.sql"), us(at), us(at), us(at), all_owners, list(owners)))
    assert types == ["String", "String", "String", "Int64", "Int64"]
    return rows


def traffic_before(db, at, all_credentials=1, credential_ids=()):
    types, rows = db.rows(bind(read_sql("fleet_traffic_before.sql"), ts(at), all_credentials, list(credential_ids)))
    assert types == ["String", "Int64"]
    return rows


def totals(db, at):
    types, rows = db.rows(bind(read_sql("fleet_session_totals.sql"), us(at), us(at)))
    assert types == ["String", "UInt64", "Int64", "Int64"]
    return rows


def online(db, at):
    types, rows = db.rows(bind(read_sql("fleet_online_sessions.sql"), us(at), us(at), us(at), us(at)))
    assert types == ["String", "String", "Int64", "String", "String", "String", "UInt64"]
    return rows


def test_fleet_credentials(db):  # noqa: F811
    fleet_db(db)
    created = us("2024-05-01 08:00:00")
    # The latest traffic of all time (the state table's); as of `at` it is read from the rows.
    assert credentials(db, "2024-05-01 10:00:00") == [
        ["cr_1", "authtoken", "bot_a", created, us("2024-05-01 09:56:00")],
        ["cr_2", "ssh_key", "bot_a", created, 0],
        ["cr_5", "authtoken", "bot_a", created, 0],
        ["cr_4", "authtoken", "bot_c", created, 0],
        ["cr_3", "authtoken", "usr_b", created, us("2024-05-01 09:50:00")],
    ]
    # Later: cr_5 deleted, cr_4 revoked with bot_c.
    assert [r[0] for r in credentials(db, "2024-05-01 12:00:01")] == ["cr_1", "cr_2", "cr_3"]
    assert credentials(db, "2024-05-01 09:30:00", 0, ["usr_b"]) == [
        ["cr_3", "authtoken", "usr_b", created, us("2024-05-01 09:50:00")],
    ]
    assert credentials(db, "2024-05-01 07:00:00") == []
    assert credentials(db, "2024-05-01 10:00:00", 0, ["bot_a' OR 1=1 --"]) == []


def test_fleet_traffic_before(db):  # noqa: F811
    fleet_db(db)
    assert traffic_before(db, "2024-05-01 09:56:00") == [
        ["cr_1", us("2024-05-01 09:55:00")],
        ["cr_3", us("2024-05-01 09:50:00")],
    ]
    assert traffic_before(db, "2024-05-01 09:50:00", 0, ["cr_1"]) == [["cr_1", us("2024-05-01 09:20:00")]]
    assert traffic_before(db, "2024-05-01 09:00:00") == []
    assert traffic_before(db, "2024-05-01 10:00:00", 0, ["cr_1' OR 1=1 --"]) == []


def test_fleet_sessions(db):  # noqa: F811
    fleet_db(db)
    assert totals(db, "2024-05-01 10:30:00") == [
        ["cr_1", 1, us("2024-05-01 09:00:00"), us("2024-05-01 10:00:00")],
        ["cr_3", 1, us("2024-05-01 09:30:00"), us("2024-05-01 09:45:00")],
        ["cr_4", 1, us("2024-05-01 09:00:00"), 0],
    ]
    assert totals(db, "2024-05-01 11:00:01")[0] == ["cr_1", 2, us("2024-05-01 11:00:00"), us("2024-05-01 10:00:00")]
    # At 09:40: ts_1 with ep_1 (ep_2 deleted at 09:30), ts_3, ts_4 without endpoints.
    assert online(db, "2024-05-01 09:40:00") == [
        ["ts_1", "cr_1", us("2024-05-01 09:00:00"), "us", "darwin", "ngrok/3.18.4", 1],
        ["ts_3", "cr_3", us("2024-05-01 09:30:00"), "eu", "linux", "ngrok/3.18.4", 0],
        ["ts_4", "cr_4", us("2024-05-01 09:00:00"), "eu", "linux", "ngrok/3.18.4", 0],
    ]
    assert online(db, "2024-05-01 09:00:02")[0][-1] == 1
    assert online(db, "2024-05-01 09:20:00")[0][-1] == 2
    assert [r[0] for r in online(db, "2024-05-01 10:30:00")] == ["ts_4"]
    assert online(db, "2024-05-01 11:00:05")[0] == [
        "ts_2", "cr_1", us("2024-05-01 11:00:00"), "eu", "linux", "SSH-2.0-OpenSSH_9.6", 1
    ]


def test_fleet_timeline(db):  # noqa: F811
    """The timeline's reads (every time at once; `/v1/fleet` filters them by `at` in memory)."""
    fleet_db(db)
    created = us("2024-05-01 08:00:00")
    types, rows = db.rows(read_sql("fleet_timeline_credentials.sql"))
    assert types == ["String", "String", "String", "Int64", "Int64", "Int64"]
    assert rows == [
        ["cr_1", "authtoken", "bot_a", created, 0, 0],
        ["cr_2", "ssh_key", "bot_a", created, 0, 0],
        ["cr_5", "authtoken", "bot_a", created, us("2024-05-01 10:30:00"), 0],
        ["cr_4", "authtoken", "bot_c", created, 0, us("2024-05-01 12:00:00")],
        ["cr_3", "authtoken", "usr_b", created, 0, 0],
    ]
    types, rows = db.rows(read_sql("fleet_timeline_sessions.sql"))
    assert types == ["String", "String", "Int64", "Int64", "String", "String", "String"]
    # ts_5 (a stop without a start) is no session.
    assert rows == [
        ["ts_1", "cr_1", us("2024-05-01 09:00:00"), us("2024-05-01 10:00:00"), "us", "darwin", "ngrok/3.18.4"],
        ["ts_2", "cr_1", us("2024-05-01 11:00:00"), 0, "eu", "linux", "SSH-2.0-OpenSSH_9.6"],
        ["ts_3", "cr_3", us("2024-05-01 09:30:00"), us("2024-05-01 09:45:00"), "eu", "linux", "ngrok/3.18.4"],
        ["ts_4", "cr_4", us("2024-05-01 09:00:00"), 0, "eu", "linux", "ngrok/3.18.4"],
    ]
    types, rows = db.rows(read_sql("fleet_timeline_endpoints.sql"))
    assert types == ["String", "Int64", "Int64"]
    assert sorted(rows) == [
        ["ts_1", us("2024-05-01 09:00:01"), 0],
        ["ts_1", us("2024-05-01 09:00:02"), us("2024-05-01 09:30:00")],
        ["ts_2", us("2024-05-01 11:00:01"), 0],
    ]


def test_fleet_traffic_seconds(db):  # noqa: F811
    """Migration 0017's table, fed by its view, read whole and since a time."""
    fleet_db(db)
    types, rows = db.rows(bind(read_sql("fleet_traffic_seconds.sql"), 0, 1, 0))
    assert types == ["String", "Int64"]
    # Attributed rows with sign +1 only (the -1 copies and the unattributed row are not traffic).
    expected = [
        ("cr_1", us("2024-05-01 09:20:00")),
        ("cr_1", us("2024-05-01 09:55:00")),
        ("cr_1", us("2024-05-01 09:56:00")),
        ("cr_3", us("2024-05-01 09:50:00")),
    ]
    assert sorted(set(tuple(r) for r in rows)) == expected
    # Read in parts, each credential in exactly one.
    parts = [db.rows(bind(read_sql("fleet_traffic_seconds.sql"), 0, 3, part))[1] for part in range(3)]
    assert sorted(set(tuple(r) for part in parts for r in part)) == expected
    assert sum(1 for part in parts if any(r[0] == "cr_1" for r in part)) == 1
    # Rows are stamped with the minute they were inserted: none is from the future.
    _, rows = db.rows(bind(read_sql("fleet_traffic_seconds.sql"), 4_000_000_000, 1, 0))
    assert rows == []
