-- Evidence of a `usage_spike` rule (crates/query/src/alerts/mod.rs): per owner, the UTC hours (by
-- event time) whose attributed bytes out are over a floor and over a factor × the owner's trailing
-- median, among the hours that got rows ingested since a time (and stamped after an event time)
-- and that start after a bound (the previous episode's last hour, if any);
-- summed into one row per owner (a_events the net rows of those hours, a_bytes their bytes out,
-- first_seen the start of the first such hour, last_seen the start of the last).
--
-- The trailing median of an hour H is the median of the owner's hourly bytes out over the hours in
-- [H - trailing, H) in which it had usage (net rows > 0): hours with no usage are left out, so a
-- bot that works a few hours a day is compared with its working hours. The median of an even count
-- is the upper of the two middle values (ClickHouse's medianExact, on 18.16 and current); with no
-- such hour the median is 0 and only the floor applies.
--
-- The hours that may alert come from usage_events (bounded by ingestion time and by the event-time
-- partition key); their sums and the trailing series from usage_rollup_hourly (migration 0010,
-- ordered by status, owner, hour), so a long trailing window reads hourly rows, not events.
-- Placeholders, in order: the trailing window in seconds, ingested since, event time after,
-- owner_id ('' for all), owner_id again, event time after minus the trailing window and an hour
-- (the hour holding event time after may alert), owner_id, owner_id again, hour start after (the
-- previous episode's last hour, 0 for none), the floor (bytes), the factor. Times are Unix
-- seconds.
SELECT
    c_owner_id                      AS a_owner_id,
    ''                              AS a_credential_id,
    toInt64(sum(c_events))          AS a_events,
    toInt64(sum(c_bytes))           AS a_bytes,
    toUInt32(min(c_start))          AS a_first_seen,
    toUInt32(max(c_start))          AS a_last_seen,
    toUInt32(max(c_ingested))       AS a_last_ingested
FROM
(
    SELECT
        c_owner_id,
        c_start,
        c_ingested,
        s_events[indexOf(s_starts, c_start)]                               AS c_events,
        s_bytes[indexOf(s_starts, c_start)]                                AS c_bytes,
        arrayFilter((b, s) -> s >= c_start - ? AND s < c_start, s_bytes, s_starts) AS c_trailing
    FROM
    (
        SELECT
            owner_id                                        AS c_owner_id,
            intDiv(toUInt32(event_time), 3600) * 3600       AS c_start,
            toUInt32(max(ingested_at))                      AS c_ingested
        FROM usage_events
        WHERE status = 'attributed'
          AND ingested_at >= toDateTime(?)
          AND event_time > toDateTime(?)
          AND (owner_id = ? OR ? = '')
        GROUP BY c_owner_id, c_start
    ) AS candidates
    ALL INNER JOIN
    (
        SELECT
            s_owner_id                                      AS c_owner_id,
            groupArray(s_hour)                              AS s_starts,
            groupArray(s_hour_bytes)                        AS s_bytes,
            groupArray(s_hour_rows)                         AS s_events
        FROM
        (
            SELECT
                owner_id                                    AS s_owner_id,
                toUInt32(hour)                              AS s_hour,
                sum(net_bytes_out)                          AS s_hour_bytes,
                sum(net_rows)                               AS s_hour_rows
            FROM usage_rollup_hourly
            WHERE status = 'attributed'
              AND hour > toDateTime(?)
              AND (owner_id = ? OR ? = '')
            GROUP BY s_owner_id, s_hour
            HAVING s_hour_rows > 0
        )
        GROUP BY c_owner_id
    ) AS series USING c_owner_id
    WHERE indexOf(s_starts, c_start) > 0
)
WHERE c_start > ?
  AND c_bytes > ?
  AND c_bytes > ? * if(empty(c_trailing), 0, arrayReduce('medianExact', c_trailing))
GROUP BY a_owner_id
ORDER BY a_owner_id
