-- The event ids a traffic topic's newest events were written with, for the pipeline's repeat
-- window (crates/ingest/src/repeats.rs) after a start: the `attributed` and `unattributed` rows
-- (not `duplicate` or `dead_letter` ones) whose event time is within the window of the newest
-- event time written for the topic, netting to one row (a restated event counts once), with the
-- position each was written at. The newest `limit` of them, newest first.
-- Read verbatim by the pipeline (include_str! in crates/query/src/read.rs) and by
-- tests/python/test_reports_chdb.py.
-- Placeholders, in order: the topic (String), the topic again, the window (Int64, seconds), limit.
-- Runs on ClickHouse 18.16: the newest time is a scalar subquery, and every result column is cast
-- to the type the reader expects.
SELECT
    toString(event_id)             AS r_event_id,
    toInt64(max(event_time_us))    AS r_event_time_us,
    toInt32(any(kafka_partition))  AS r_partition,
    toInt64(any(kafka_offset))     AS r_offset
FROM usage_events
WHERE kafka_topic = ?
  AND status IN ('attributed', 'unattributed')
  AND event_id != ''
  AND event_time >= toDateTime(toUInt32(greatest(toInt64(toUInt32(
      (SELECT max(event_time) FROM usage_events WHERE kafka_topic = ?))) - ?, 0)))
GROUP BY event_id
HAVING sum(sign) > 0
ORDER BY r_event_time_us DESC, r_event_id
LIMIT ?
