-- Every bot user of the audit log, one row each: latest non-empty name, whether the latest event
-- leaves it active (a bot_user_deleted.v0 event, or `active: false`, does not), whether it was
-- deleted, its first event and deletion time. Read verbatim by the HTTP API
-- (crates/query/src/api/catalog.rs) and by tests/python/test_reports_chdb.py. A bot user's
-- customer metadata is read by bot_user_metadata.sql.
-- Placeholders, in order: all (UInt8: 1 for every bot user), bot ids (Array(String)).
SELECT
    toString(bot_id)         AS b_bot_id,
    toString(name)           AS b_name,
    toUInt8(active)          AS b_active,
    toUInt8(deleted)         AS b_deleted,
    toInt64(created_us)      AS b_created_us,
    toInt64(deleted_us)      AS b_deleted_us
FROM
(
    SELECT
        object_id                                                              AS bot_id,
        argMaxIf(visitParamExtractString(object, 'name'), event_time_us,
                 visitParamExtractString(object, 'name') != '')                AS name,
        argMax(row_active, event_time_us)                                      AS active,
        countIf(event_type = 'bot_user_deleted.v0') > 0                        AS deleted,
        min(event_time_us)                                                     AS created_us,
        maxIf(event_time_us, event_type = 'bot_user_deleted.v0')               AS deleted_us
    FROM
    (
        SELECT
            object_id,
            event_type,
            event_time_us,
            object,
            event_type != 'bot_user_deleted.v0'
                AND visitParamExtractRaw(object, 'active') != 'false' AS row_active
        FROM control_events
        WHERE event_type IN ('bot_user_created.v0', 'bot_user_updated.v0', 'bot_user_deleted.v0')
    )
    GROUP BY bot_id
)
WHERE ? = 1
   OR bot_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
ORDER BY b_bot_id
