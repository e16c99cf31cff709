"""botmeter's ClickHouse SQL on current ClickHouse, in process (chDB).

The Rust tests run the same SQL against the ClickHouse 18.16 server of `scripts/services.sh`; these
run it on the ClickHouse that chDB embeds, so every statement is known to work on both. The SQL is not
copied: the tests read the very files the Rust crate embeds with include_str!:

- schemas/clickhouse/NNNN_name.sql, split as crates/query/src/migrate.rs splits them (lines holding
  only `;`), in version order;
- crates/query/sql/schema_migrations.sql, the migrations table;
- crates/query/sql/topic_positions.sql, whose `?` placeholders the Rust
  client binds; here they are replaced, in order, by quoted literals.

Needs the `chdb-core` package (`pip install chdb-core`, imported as `chdb`).
"""

import json
import re
from pathlib import Path

import pytest

chdb_session = pytest.importorskip("chdb.session", reason="pip install chdb-core")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "clickhouse"
SQL_DIR = ROOT / "crates" / "query" / "sql"
MIGRATION_FILE = re.compile(r"^(\d+)_([a-z0-9_]+)\.sql$")


def split_statements(sql):
    """Pieces between lines holding only `;`, without blank or comment-only pieces."""
    pieces, current = [], []
    for line in sql.splitlines(keepends=True):
        if line.strip() == ";":
            pieces.append("".join(current))
            current = []
        else:
            current.append(line)
    pieces.append("".join(current))
    return [
        piece.strip()
        for piece in pieces
        if any(line.strip() and not line.lstrip().startswith("--") for line in piece.splitlines())
    ]


def migration_files():
    files = []
    for path in SCHEMA_DIR.glob("*.sql"):
        match = MIGRATION_FILE.match(path.name)
        assert match, f"{path.name}: expected NNNN_name.sql"
        files.append((int(match.group(1)), path))
    files.sort()
    versions = [version for version, _ in files]
    assert len(set(versions)) == len(versions), f"duplicate versions in {SCHEMA_DIR}"
    return [path for _, path in files]


def literal(value):
    """A ClickHouse literal, quoted as the Rust client quotes bound strings."""
    if isinstance(value, bool):
        raise TypeError("no booleans")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def bind(sql, *values):
    """Replaces each `?` in order, as clickhouse::Query::bind does: strings quoted, lists as
    arrays; the count must match."""
    parts = sql.split("?")
    assert len(parts) == len(values) + 1, f"{len(parts) - 1} placeholders, {len(values)} values"
    out = [parts[0]]
    for value, part in zip(values, parts[1:]):
        if isinstance(value, (list, tuple)):
            out.append("[" + ",".join(literal(v) for v in value) + "]")
        else:
            out.append(literal(value))
        out.append(part)
    return "".join(out)


def read_sql(name):
    return (SQL_DIR / name).read_text()


class Db:
    def __init__(self, session):
        self.session = session

    def run(self, sql):
        return self.session.query(sql)

    def rows(self, sql):
        """Rows as lists, with the column types; 64-bit integers come back as numbers."""
        result = self.session.query(sql, "JSONCompact")
        data = json.loads(result.bytes() or b'{"meta": [], "data": []}')
        types = [column["type"] for column in data["meta"]]
        rows = []
        for row in data["data"]:
            rows.append([int(v) if t.startswith(("UInt", "Int")) else v for v, t in zip(row, types)])
        return types, rows

    def insert(self, table, rows):
        body = "\n".join(json.dumps(row) for row in rows)
        self.run(f"INSERT INTO {table} FORMAT JSONEachRow\n{body}")


@pytest.fixture()
def db(tmp_path):
    session = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        session.query("CREATE DATABASE IF NOT EXISTS botmeter")
        session.query("USE botmeter")
        session.query(read_sql("schema_migrations.sql"))
        for path in migration_files():
            for statement in split_statements(path.read_text()):
                session.query(statement)
        yield Db(session)
    finally:
        session.close()


def test_split_matches_the_rust_rules():
    sql = "-- header\n\nCREATE TABLE a (x UInt8) ENGINE = Memory\n;\n  ;  \nSELECT 'a;b'\n;\n-- trailing\n"
    assert split_statements(sql) == [
        "-- header\n\nCREATE TABLE a (x UInt8) ENGINE = Memory",
        "SELECT 'a;b'",
    ]


def test_every_migration_applies_and_creates_the_tables(db):
    assert migration_files(), f"no migrations in {SCHEMA_DIR}"
    _, rows = db.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    )
    assert [r[0] for r in rows] == [
        "alerts",
        "control_events",
        "control_events_log",
        "dead_letters",
        "fleet_credentials",
        "fleet_credentials_mv",
        "fleet_endpoints",
        "fleet_endpoints_mv",
        "fleet_sessions",
        "fleet_sessions_mv",
        "fleet_traffic",
        "fleet_traffic_mv",
        "fleet_traffic_seconds",
        "fleet_traffic_seconds_mv",
        "schema_migrations",
        "usage_alert_evidence",
        "usage_alert_evidence_mv",
        "usage_events",
        "usage_rollup",
        "usage_rollup_daily",
        "usage_rollup_daily_mv",
        "usage_rollup_hourly",
        "usage_rollup_hourly_mv",
        "usage_rollup_mv",
    ]
    # The ALTER migrations added their columns with the types the Rust rows write.
    _, rows = db.rows(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
        "AND name IN ('sign', 'anomalies', 'source') ORDER BY table, name"
    )
    assert rows == [
        ["control_events", "anomalies", "Array(String)"],
        ["control_events", "source", "String"],
        ["control_events_log", "anomalies", "Array(String)"],
        ["control_events_log", "source", "String"],
        ["usage_alert_evidence", "sign", "Int8"],
        ["usage_alert_evidence_mv", "sign", "Int8"],
        ["usage_events", "sign", "Int8"],
    ]
    # The audit log is read through a view that shows each Kafka position once.
    _, rows = db.rows(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() "
        "AND name LIKE 'control_events%' ORDER BY name"
    )
    assert rows == [["control_events", "View"], ["control_events_log", "ReplacingMergeTree"]]


def usage(event_id, time, owner_id, status="attributed", **metrics):
    row = {
        "event_id": event_id,
        "event_type": "tcp_connection_closed.v0",
        "event_time": time,
        "status": status,
        "owner_id": owner_id,
        "kafka_topic": "traffic",
    }
    row.update(metrics)
    return row


def test_topic_positions(db):
    db.insert(
        "usage_events",
        [
            {"event_id": "a", "kafka_topic": "traffic", "kafka_partition": 0, "kafka_offset": 5},
            {"event_id": "b", "kafka_topic": "traffic", "kafka_partition": 0, "kafka_offset": 9},
            {"event_id": "c", "kafka_topic": "traffic", "kafka_partition": 1, "kafka_offset": 4},
            {"event_id": "d", "kafka_topic": "other", "kafka_partition": 1, "kafka_offset": 400},
        ],
    )
    db.insert(
        "dead_letters",
        [
            {"kafka_topic": "traffic", "kafka_partition": 0, "kafka_offset": 12, "payload": "x"},
            {"kafka_topic": "traffic", "kafka_partition": 3, "kafka_offset": 0, "payload": "y"},
        ],
    )
    db.insert(
        "control_events_log",
        [{"event_id": "e", "kafka_topic": "control", "kafka_partition": 0, "kafka_offset": 100}],
    )
    sql = read_sql("topic_positions.sql")
    types, rows = db.rows(bind(sql, "traffic", "traffic"))
    assert types == ["Int32", "Int64"]
    # Dead letters never move a position.
    assert rows == [[0, 9], [1, 4]]
    _, rows = db.rows(bind(sql, "control", "control"))
    assert rows == [[0, 100]]
