-- Each bot user's versions in force during a range: the JSON object of its latest
-- bot_user_created.v0 or bot_user_updated.v0 event at or before the range's start, then one row per
-- such event inside the range, each with the time from which it is in force (a deletion changes no
-- metadata). A version is in force from its event's time (inclusive) to the next version's, as the
-- pipeline resolves ownership as of an event's time. The API reads the customer metadata key at the
-- top level of each version's `metadata` (crates/query/src/api/tenancy.rs) and so finds when a bot
-- user named a customer: JSON text search in SQL (visitParam*, the only JSON functions of
-- ClickHouse 18.16) would also match the key nested at any depth. Read verbatim by the HTTP API and
-- by tests/python/test_reports_chdb.py.
-- Placeholders, in order: from, from again, to (Int64, Unix microseconds; events at or after `to`
-- are not read).
-- Must run on ClickHouse 18.16: aliases differ from column names, and both sides of the UNION ALL
-- have the same names and types.
SELECT
    toString(bot_id)   AS m_bot_id,
    toInt64(since_us)  AS m_since_us,
    toString(obj)      AS m_object
FROM
(
    SELECT
        object_id                     AS bot_id,
        max(event_time_us)            AS since_us,
        argMax(object, event_time_us) AS obj
    FROM control_events
    WHERE event_type IN ('bot_user_created.v0', 'bot_user_updated.v0')
      AND event_time_us <= ?
    GROUP BY bot_id
    UNION ALL
    SELECT
        object_id                     AS bot_id,
        event_time_us                 AS since_us,
        object                        AS obj
    FROM control_events
    WHERE event_type IN ('bot_user_created.v0', 'bot_user_updated.v0')
      AND event_time_us > ?
      AND event_time_us < ?
)
ORDER BY m_bot_id, m_since_us
