-- Every credential of the fleet's timeline (crates/query/src/api/fleet/timeline.rs), whatever the
-- time: each authtoken and SSH key with its kind, owner (at creation; events flagged
-- owner_change_rejected are ignored), creation, first deletion and its bot user's first deletion
-- (0 when none), from the state table of migration 0013. The timeline keeps, as of any `at`, the
-- credentials fleet_credentials.sql keeps (created before `at`, neither deleted before `at`).
-- Read verbatim by the HTTP API and by tests/python/test_fleet_chdb.py.
--
-- No placeholders. Must run on ClickHouse 18.16 and current ClickHouse: one join, joined
-- subqueries with aliases, aliases that differ from column names.
SELECT
    toString(credential_id)   AS l_credential_id,
    toString(credential_kind) AS l_kind,
    toString(owner_id)        AS l_owner_id,
    toInt64(created)          AS l_created_us,
    toInt64(deleted)          AS l_deleted_us,
    toInt64(owner_deleted)    AS l_owner_deleted_us
FROM
(
    SELECT
        credential_id,
        anyMerge(kind)         AS credential_kind,
        argMinIfMerge(owner)   AS owner_id,
        minMerge(created_us)   AS created,
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
WHERE owner_id != ''
ORDER BY l_owner_id, l_credential_id
