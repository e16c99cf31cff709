-- The fleet's credentials at a time `at`: every authtoken and SSH key (the credentials an agent
-- starts a session with; API keys never do) created before `at` and live at `at` (neither it nor
-- its bot user deleted before `at`: deleting a bot user revokes its credentials), its kind, owner
-- (at creation; events flagged owner_change_rejected are ignored), creation, and its latest
-- traffic of all time (the latest usage time of an attributed usage row of it with sign +1; 0
-- when none). The API uses that only when it is before `at`, and reads the others' from the raw
-- rows (fleet_traffic_before.sql). Reads the state tables of migration 0013, not the events.
-- Read verbatim by the HTTP API (crates/query/src/api/fleet.rs) and by
-- tests/python/test_fleet_chdb.py.
--
-- Placeholders, in order: at (Int64, microseconds) three times, all (UInt8: 1 for every owner),
-- owner ids (Array(String)).
-- Must run on ClickHouse 18.16 and current ClickHouse: one join per SELECT, joined subqueries
-- with aliases, aliases that differ from column names, every result column cast to the type the
-- Rust row reads. control_events_log is read without FINAL: a minimum is the same over copies.
SELECT
    toString(credential_id)   AS f_credential_id,
    toString(credential_kind) AS f_kind,
    toString(owner_id)        AS f_owner_id,
    toInt64(created)          AS f_created_us,
    toInt64(last_traffic)     AS f_last_traffic_us
FROM
(
    SELECT credential_id, credential_kind, owner_id, created
    FROM
    (
        SELECT
            credential_id,
            anyMerge(kind)       AS credential_kind,
            argMinIfMerge(owner) AS owner_id,
            minMerge(created_us) AS created,
            minIfMerge(deleted_us) AS deleted
        FROM fleet_credentials
        GROUP BY credential_id
    ) AS credentials
    ANY LEFT JOIN
    (
        SELECT
            object_id          AS owner_id,
            min(event_time_us) AS owner_deleted
        FROM control_events_log
        WHERE event_type = 'bot_user_deleted.v0'
        GROUP BY owner_id
    ) AS owner_deletions USING owner_id
    WHERE created < ?
      AND (deleted = 0 OR deleted >= ?)
      AND (owner_deleted = 0 OR owner_deleted >= ?)
      AND owner_id != ''
      AND (? = 1 OR owner_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
) AS live
ANY LEFT JOIN
(
    SELECT
        credential_id,
        maxMerge(last_traffic_us) AS last_traffic
    FROM fleet_traffic
    GROUP BY credential_id
) AS traffic USING credential_id
ORDER BY f_owner_id, f_credential_id
