"""The alert SQL (crates/query/sql/alert_*.sql, alerts_*.sql) on current ClickHouse, in process (chDB).

tests/it/alerts.rs runs the same files through `botmeter run` and `botmeter serve` against the
ClickHouse 18.16 server; this checks them, with hand-computed numbers, on the ClickHouse chDB
embeds. The files are the ones the Rust crate embeds; `?` is bound in order as the client binds.
"""

import time

from test_migrations_chdb import Db, bind, chdb_session, db, migration_files, read_sql, split_statements  # noqa: F401  (db is a fixture)

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC


def usage(event_id, offset, flags, bytes_out, owner="bot_a", credential="cr_a", status="attributed", ingested=0, sign=1):
    return {
        "event_id": event_id,
        "event_time": T0 + offset,
        "status": status,
        "flags": flags,
        "owner_id": owner,
        "credential_id": credential,
        "bytes_in": 1,
        "bytes_out": bytes_out,
        "ingested_at": T0 + ingested,
        "sign": sign,
    }


def test_flag_evidence_per_owner_and_credential(db):
    db.insert(
        "usage_events",
        [
            usage("a1", 0, ["credential_deleted"], 10, ingested=5),
            usage("a2", 30, ["credential_deleted", "owner_inactive"], 20, ingested=40),
            # Restated away: net zero.
            usage("a3", 50, ["credential_deleted"], 99, credential="cr_b", ingested=50),
            usage("a3", 50, ["credential_deleted"], 99, credential="cr_b", ingested=51, sign=-1),
            usage("b1", 10, ["owner_deleted"], 7, owner="bot_b", credential="cr_c", ingested=10),
            usage("c1", 10, [], 1000, owner="bot_c", credential="cr_d", ingested=10),
        ],
    )
    sql = read_sql("alert_flag_evidence.sql")
    _, rows = db.rows(bind(sql, "credential_deleted", "credential_deleted", T0, 0, "", "", "", ""))
    assert rows == [["bot_a", "cr_a", 2, 32, T0, T0 + 30, T0 + 40]]
    # Both flags of inactive_owner_used.
    _, rows = db.rows(bind(sql, "owner_inactive", "owner_deleted", T0, 0, "", "", "", ""))
    assert rows == [["bot_a", "cr_a", 1, 21, T0 + 30, T0 + 30, T0 + 40], ["bot_b", "cr_c", 1, 8, T0 + 10, T0 + 10, T0 + 10]]
    # After the previous episode's last evidence, for one key.
    _, rows = db.rows(bind(sql, "credential_deleted", "credential_deleted", T0, T0 + 10, "bot_a", "bot_a", "cr_a", "cr_a"))
    assert rows == [["bot_a", "cr_a", 1, 21, T0 + 30, T0 + 30, T0 + 40]]
    # Ingested too long ago: out of the lookback.
    _, rows = db.rows(bind(sql, "credential_deleted", "credential_deleted", T0 + 41, 0, "", "", "", ""))
    assert rows == []


def test_unattributed_spike_sums_intervals_over_the_threshold(db):
    db.insert(
        "usage_events",
        [
            # 60 s intervals start at multiples of 60; T0 = 28333333 * 60 + 20, so u1 and u2 fall in
            # [T0 - 20, T0 + 40) (6002 bytes), u3 alone in [T0 + 100, T0 + 160) (101), u4 in
            # [T0 + 160, T0 + 220) (9001).
            usage("u1", 0, [], 3000, owner="", credential="", status="unattributed", ingested=1),
            usage("u2", 5, [], 3000, owner="", credential="", status="unattributed", ingested=6),
            usage("u3", 100, [], 100, owner="", credential="", status="unattributed", ingested=101),
            usage("u4", 160, [], 9000, owner="", credential="", status="unattributed", ingested=161),
            usage("x1", 0, [], 50000, status="attributed", ingested=1),
        ],
    )
    sql = read_sql("alert_unattributed_evidence.sql")
    start = (T0 // 60) * 60
    _, rows = db.rows(bind(sql, 60, 60, T0, 0, 5000, 0))
    assert rows == [["", "", 3, 15003, start, start + 180, T0 + 161]]
    # After an episode whose last interval started at `start`: u2 (stamped after `start`) does not
    # bring that interval back; only the later one counts (else the next episode would start at
    # `start` and reuse the resolved episode's id).
    _, rows = db.rows(bind(sql, 60, 60, T0, start, 5000, start))
    assert rows == [["", "", 1, 9001, start + 180, start + 180, T0 + 161]]
    # Nothing over the threshold: one row of zero events (the evaluator drops it).
    _, rows = db.rows(bind(sql, 60, 60, T0, 0, 100000, 0))
    assert rows[0][2] == 0


def alert(alert_id, state, version, delivered=0, resolved_at=0, fired_at=10):
    return {
        "alert_id": alert_id,
        "rule": "r",
        "kind": "acl_violation",
        "state": state,
        "owner_id": "bot_a",
        "credential_id": "cr_a",
        "events": version,
        "bytes": 1,
        "first_seen": T0,
        "last_seen": T0,
        "last_ingested": T0,
        "fired_at": T0 + fired_at,
        "resolved_at": T0 + resolved_at if resolved_at else 0,
        "delivered": delivered,
        "version": version,
    }


def test_alert_state_and_list_read_the_newest_version(db):
    db.insert(
        "alerts",
        [
            alert("al_1", "firing", 1),
            alert("al_1", "firing", 2, delivered=1),
            alert("al_1", "resolved", 4, resolved_at=100),
            alert("al_1", "resolved", 5, delivered=1, resolved_at=100),
            alert("al_2", "firing", 1, fired_at=200),
            alert("al_2", "firing", 2, delivered=1, fired_at=200),
            alert("al_3", "resolved", 3, delivered=1, resolved_at=50, fired_at=20),
        ],
    )
    state = read_sql("alerts_state.sql")
    _, rows = db.rows(bind(state, T0 + 60))
    # al_1 resolved at +100 (since +60), al_2 firing; al_3 resolved before +60 and delivered.
    assert [(r[0], r[3], r[13], r[14]) for r in rows] == [("al_1", "resolved", 1, 5), ("al_2", "firing", 1, 2)]
    listing = read_sql("alerts_list.sql")
    _, rows = db.rows(bind(listing, T0 + 1000, T0, "", "", "", "", 100))
    assert [(r[0], r[3]) for r in rows] == [("al_1", "resolved"), ("al_3", "resolved"), ("al_2", "firing")]
    _, rows = db.rows(bind(listing, T0 + 1000, T0, "firing", "firing", "", "", 100))
    assert [r[0] for r in rows] == ["al_2"]
    # [T0 + 150, T0 + 1000): al_1 resolved at +100 and al_3 at +50 are over.
    _, rows = db.rows(bind(listing, T0 + 1000, T0 + 150, "", "", "", "", 100))
    assert [r[0] for r in rows] == ["al_2"]
    _, rows = db.rows(bind(listing, T0 + 1000, T0, "", "", "al_3", "al_3", 100))
    assert [r[0] for r in rows] == ["al_3"]


def test_alerts_audit_reads_an_owners_or_credentials_alerts_in_the_window(db):
    other = dict(alert("al_9", "firing", 1, fired_at=30), owner_id="bot_b", credential_id="cr_b")
    on_owner = dict(alert("al_4", "firing", 1, fired_at=40), credential_id="")
    db.insert(
        "alerts",
        [
            alert("al_1", "firing", 1),
            alert("al_1", "resolved", 4, resolved_at=100),
            alert("al_1", "resolved", 5, delivered=1, resolved_at=100),
            alert("al_3", "resolved", 3, delivered=1, resolved_at=50, fired_at=20),
            other,
            on_owner,
        ],
    )
    sql = read_sql("alerts_audit.sql")
    # An owner's: its own and its credentials', newest version, oldest firing first.
    _, rows = db.rows(bind(sql, ["bot_a"], ["cr_a"], 0, 4_000_000_000, 0, 4_000_000_000, 100))
    assert [(r[0], r[3], r[14]) for r in rows] == [("al_1", "resolved", 5), ("al_3", "resolved", 3), ("al_4", "firing", 1)]
    # A credential's only.
    _, rows = db.rows(bind(sql, [], ["cr_b"], 0, 4_000_000_000, 0, 4_000_000_000, 100))
    assert [r[0] for r in rows] == ["al_9"]
    # [+60, +200): al_1 resolved at +100 (fired before); al_3 and al_4 fired and resolved before.
    _, rows = db.rows(bind(sql, ["bot_a"], ["cr_a"], T0 + 60, T0 + 200, T0 + 60, T0 + 200, 100))
    assert [r[0] for r in rows] == ["al_1"]


def test_alert_evidence_is_backfilled_once_and_then_fed_by_the_view(tmp_path):
    """Migration 0016 on a database with usage: the flagged and unattributed rows stamped within
    61 days are copied, once (the migration run again copies nothing), and later inserts reach
    the table through the view; unflagged attributed rows never do."""
    session = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        session.query("CREATE DATABASE IF NOT EXISTS botmeter")
        session.query("USE botmeter")
        db = Db(session)
        files = migration_files()
        evidence_migration = [p for p in files if p.name.startswith("0016_")]
        assert evidence_migration, "0016 creates usage_alert_evidence"
        for path in files:
            if path not in evidence_migration:
                for statement in split_statements(path.read_text()):
                    session.query(statement)
        now = int(time.time())

        def at(offset, event_id, flags=(), **kw):
            row = usage(event_id, 0, list(flags), 10, **kw)
            row["event_time"] = now + offset
            row["ingested_at"] = now + offset + 1
            return row

        db.insert(
            "usage_events",
            [
                at(-100, event_id="recent", flags=["credential_deleted"]),
                at(-200, event_id="lost", owner="", credential="", status="unattributed"),
                at(-80 * 86400, event_id="old", flags=["acl_violation"]),
                at(-50, event_id="plain"),
            ],
        )
        migration = evidence_migration[0].read_text()
        for _ in range(2):
            for statement in split_statements(migration):
                session.query(statement)
        _, rows = db.rows("SELECT status, flags, owner_id, sign FROM usage_alert_evidence ORDER BY ingested_at")
        assert rows == [["unattributed", [], "", 1], ["attributed", ["credential_deleted"], "bot_a", 1]]
        db.insert("usage_events", [at(-10, event_id="new", flags=["owner_inactive"]), at(-5, event_id="plain2")])
        _, rows = db.rows("SELECT flags FROM usage_alert_evidence ORDER BY ingested_at")
        assert rows == [[[]], [["credential_deleted"]], [["owner_inactive"]]]
    finally:
        session.close()


H0 = (T0 // 3600) * 3600  # the UTC hour T0 is in


def hour(h, owner, bytes_out, event_id, sign=1, ingested=0):
    """One attributed connection of `owner`, a minute into hour H0 + h hours."""
    offset = H0 - T0 + h * 3600 + 60
    return usage(event_id, offset, [], bytes_out, owner=owner, credential="cr_" + owner, ingested=ingested, sign=sign)


def test_usage_spike_compares_an_hour_with_the_owners_trailing_median(db):
    db.insert(
        "usage_events",
        [
            # bot_a: 100, 300, 200, then 5000 (median of [100, 200, 300] is 200; 5000 > 3 × 200).
            hour(-3, "bot_a", 100, "a1"),
            hour(-2, "bot_a", 300, "a2"),
            hour(-1, "bot_a", 200, "a3"),
            hour(0, "bot_a", 4000, "a4", ingested=30),
            hour(0, "bot_a", 1000, "a5", ingested=40),
            # bot_b: quiet; 50 is over 3 × its median (1) but under the floor.
            hour(-2, "bot_b", 1, "b1"),
            hour(0, "bot_b", 50, "b2"),
            # bot_c: new, no trailing hour: median 0, only the floor applies.
            hour(0, "bot_c", 2000, "c1"),
            # bot_d: an even count; the median is the upper middle value (300), 800 < 3 × 300.
            hour(-2, "bot_d", 100, "d1"),
            hour(-1, "bot_d", 300, "d2"),
            hour(0, "bot_d", 800, "d3"),
            # bot_e: a big hour 3 hours back keeps 3000 from alerting with a 24-hour window.
            hour(-3, "bot_e", 10000, "e1"),
            hour(0, "bot_e", 3000, "e2"),
            # bot_f: an hour restated away (net rows 0) is no hour of usage: not in the median.
            hour(-1, "bot_f", 90000, "f1"),
            hour(-1, "bot_f", 90000, "f1", sign=-1),
            hour(0, "bot_f", 1500, "f2"),
        ],
    )
    sql = read_sql("alert_usage_spike_evidence.sql")

    def spikes(trailing_hours, ingested_since=T0 - 100_000, event_after=T0 - 100_000, owner="", floor=1000, factor=3.0, hour_after=0):
        trailing = trailing_hours * 3600
        _, rows = db.rows(bind(sql, trailing, ingested_since, event_after, owner, owner, event_after - trailing - 3600, owner, owner, hour_after, floor, factor))
        return rows

    rows = spikes(24)
    assert rows == [
        ["bot_a", "", 2, 5000, H0, H0, T0 + 40],
        ["bot_c", "", 1, 2000, H0, H0, T0],
        # bot_e's first hour has no trailing hour: over the floor, it is a spike itself.
        ["bot_e", "", 1, 10000, H0 - 3 * 3600, H0 - 3 * 3600, T0],
        ["bot_f", "", 1, 1500, H0, H0, T0],
    ]
    # A 2-hour window no longer sees bot_e's big hour: its hour 0 is a spike too.
    assert [r[0] for r in spikes(2)] == ["bot_a", "bot_c", "bot_e", "bot_f"]
    assert spikes(2)[2] == ["bot_e", "", 2, 13000, H0 - 3 * 3600, H0, T0]
    # One owner; after a previous episode's last hour nothing is new.
    assert spikes(24, owner="bot_a") == [["bot_a", "", 2, 5000, H0, H0, T0 + 40]]
    assert spikes(24, owner="bot_a", event_after=H0, hour_after=H0) == []
    # Rows stamped after a bound inside an hour: the whole hour counts (its sum, its trailing hours).
    assert spikes(24, event_after=H0 + 30) == spikes(24)[:2] + spikes(24)[3:]
    # Hours with no row ingested since the bound do not alert (bot_a's hour 0 got one at +40).
    assert [r[0] for r in spikes(24, ingested_since=T0 + 35)] == ["bot_a"]
    # A higher factor or floor.
    assert [r[0] for r in spikes(24, factor=30.0)] == ["bot_c", "bot_e", "bot_f"]
    assert [r[0] for r in spikes(24, floor=4000)] == ["bot_a", "bot_e"]
    # bot_d: 300 over 1.5 × its one trailing hour (100).
    assert [r[0] for r in spikes(24, factor=1.5, floor=150)] == ["bot_a", "bot_c", "bot_d", "bot_e", "bot_f"]
