-- Evidence of an `unattributed_spike` rule (crates/query/src/alerts/mod.rs): the intervals (by
-- event time) whose unattributed bytes (in + out), among the rows ingested since a time and
-- stamped after an event time (read from `usage_alert_evidence`, migration 0016), are over a
-- threshold, summed into one row (first_seen is the start of the first such interval, last_seen
-- the start of the last). No such interval: one row with a_events = 0.
-- Only intervals that start after a bound count: after a resolved episode (whose last_seen is its
-- last interval's start) that interval's start, so that rows later in that same interval do not
-- bring it back (the next episode would start at it and get the resolved episode's id); else 0.
-- Placeholders, in order: interval seconds, interval seconds, ingested since, event time after
-- (Unix seconds), threshold bytes, interval start after (Unix seconds, 0 for any).
SELECT
    ''                                   AS a_owner_id,
    ''                                   AS a_credential_id,
    toInt64(sum(b_events))               AS a_events,
    toInt64(sum(b_bytes))                AS a_bytes,
    toUInt32(min(b_start))               AS a_first_seen,
    toUInt32(max(b_start))               AS a_last_seen,
    toUInt32(max(b_ingested))            AS a_last_ingested
FROM
(
    SELECT
        intDiv(toUInt32(event_time), ?) * ?             AS b_start,
        sum(sign)                                       AS b_events,
        sum((bytes_in + bytes_out) * sign)              AS b_bytes,
        max(ingested_at)                                AS b_ingested
    FROM usage_alert_evidence
    WHERE status = 'unattributed'
      AND ingested_at >= toDateTime(?)
      AND event_time > toDateTime(?)
    GROUP BY b_start
    HAVING b_bytes > ?
       AND b_start > ?
)
