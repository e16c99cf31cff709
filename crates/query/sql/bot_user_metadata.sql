-- Each bot user's object as of a time: the JSON object of its latest bot_user_created.v0 or
-- bot_user_updated.v0 event before it (a deletion changes no metadata). The API reads the customer
-- metadata key at the top level of that object's `metadata` (crates/query/src/api/tenancy.rs):
-- JSON text search in SQL (visitParam*, the only JSON functions of ClickHouse 18.16) would also
-- match the key nested at any depth. Read verbatim by the HTTP API and by
-- tests/python/test_reports_chdb.py.
-- Placeholders: before (Int64, Unix microseconds; events at or after it are not read).
SELECT
    toString(bot_id) AS m_bot_id,
    toString(obj)    AS m_object
FROM
(
    SELECT
        object_id                     AS bot_id,
        argMax(object, event_time_us) AS obj
    FROM control_events
    WHERE event_type IN ('bot_user_created.v0', 'bot_user_updated.v0')
      AND event_time_us < ?
    GROUP BY bot_id
)
ORDER BY m_bot_id
