-- Every bot user of the audit log, one row each: latest non-empty name, whether the latest event
-- leaves it active (a bot_user_deleted.v0 event, or `active: false`, does not), whether it was
-- deleted, its first event and deletion time, and the value of a key in its metadata (the customer
-- it belongs to). Read verbatim by the HTTP API (crates/query/src/api/catalog.rs) and by
-- tests/python/test_reports_chdb.py.
-- Placeholders, in order: metadata key (String, '' for none), all (UInt8: 1 for every bot user),
-- bot ids (Array(String)), customer (String, '' for none).
SELECT
    toString(bot_id)         AS b_bot_id,
    toString(name)           AS b_name,
    toUInt8(active)          AS b_active,
    toUInt8(deleted)         AS b_deleted,
    toString(customer_value) AS b_customer,
    toInt64(created_us)      AS b_created_us,
    toInt64(deleted_us)      AS b_deleted_us
FROM
(
    WITH ? AS metadata_key
    SELECT
        object_id                                                              AS bot_id,
        argMaxIf(visitParamExtractString(object, 'name'), event_time_us,
                 visitParamExtractString(object, 'name') != '')                AS name,
        argMax(row_active, event_time_us)                                      AS active,
        countIf(event_type = 'bot_user_deleted.v0') > 0                        AS deleted,
        argMax(visitParamExtractString(metadata_json, metadata_key), event_time_us) AS customer_value,
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
                AND visitParamExtractRaw(object, 'active') != 'false' AS row_active,
            if(startsWith(visitParamExtractRaw(object, 'metadata'), '{'),
               visitParamExtractRaw(object, 'metadata'),
               visitParamExtractString(object, 'metadata')) AS metadata_json
        FROM control_events
        WHERE event_type IN ('bot_user_created.v0', 'bot_user_updated.v0', 'bot_user_deleted.v0')
    )
    GROUP BY bot_id
)
WHERE ? = 1
   OR bot_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
   OR (customer_value != '' AND customer_value = ?)
ORDER BY b_bot_id
