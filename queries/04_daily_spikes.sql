-- When did it start, and who? Day-over-day spikes: each owner's data out and HTTP requests per UTC
-- day against the day before, keeping the days that grew by at least `spike_ratio` times and by
-- at least a minimum amount, largest increase first. Traffic botmeter could not attribute is one
-- more owner, `(unattributed)`. A day after a day without traffic compares with 0.
--
-- Parameters: the lines marked `-- param` in the WITH block below.
--   first_day              first day to report (UTC); the day before it is read for the comparison
--   last_day               last day to report (UTC, inclusive)
--   spike_ratio            a spike is at least this many times the day before (2 = doubled)
--   min_increase_gb        ... and grew by at least this much data out (GB), or
--   min_increase_requests  ... by at least this many HTTP requests (with the same ratio)
-- Columns: owner, day; data out (GB) that day and the day before, the change and the ratio (NULL
--   when the day before had none); HTTP requests and TCP connections, that day and the day before.
-- Run: clickhouse-client --database botmeter < queries/04_daily_spikes.sql (or paste it).
-- Runs on ClickHouse 18.16 and current ClickHouse (18.16 has no window functions: each owner's
-- days are taken as sorted arrays). Every metric is summed times `sign`.
SELECT
    owner,
    day,
    round(out_b / 1e9, 3)                                   AS data_out_gb,
    round(prev_out / 1e9, 3)                                AS prev_day_data_out_gb,
    round((out_b - prev_out) / 1e9, 3)                      AS change_gb,
    if(prev_out > 0, round(out_b / prev_out, 2), NULL)      AS ratio,
    reqs                                                    AS requests,
    prev_reqs                                               AS prev_day_requests,
    conns                                                   AS tcp_conns,
    prev_conns                                              AS prev_day_tcp_conns
FROM
(
    SELECT
        owner,
        any(p_first_day)                                                 AS from_day,
        any(p_spike_ratio)                                               AS ratio_min,
        any(p_min_increase_gb)                                           AS gb_min,
        any(p_min_increase_requests)                                     AS reqs_min,
        arraySort(groupArray((d, out_day, reqs_day, conns_day)))         AS series,
        arrayMap(x -> tupleElement(x, 1), series)                        AS days,
        arrayMap(x -> tupleElement(x, 2), series)                        AS outs,
        arrayMap(x -> tupleElement(x, 3), series)                        AS reqss,
        arrayMap(x -> tupleElement(x, 4), series)                        AS connss,
        -- The previous element is the day before only when that day had traffic.
        arrayPushFront(arrayPopBack(days), toDate('1970-01-01'))         AS before,
        arrayMap((b, t, v) -> if(b + 1 = t, v, toInt64(0)), before, days,
                 arrayPushFront(arrayPopBack(outs), toInt64(0)))         AS prev_outs,
        arrayMap((b, t, v) -> if(b + 1 = t, v, toInt64(0)), before, days,
                 arrayPushFront(arrayPopBack(reqss), toInt64(0)))        AS prev_reqss,
        arrayMap((b, t, v) -> if(b + 1 = t, v, toInt64(0)), before, days,
                 arrayPushFront(arrayPopBack(connss), toInt64(0)))       AS prev_connss
    FROM
    (
        WITH
            toDate('2026-01-01')  AS first_day,             -- param: first day to report (UTC)
            toDate('2026-01-31')  AS last_day,              -- param: last day to report (UTC, inclusive)
            2.0                   AS spike_ratio,           -- param: at least this many times the day before
            1.0                   AS min_increase_gb,       -- param: and at least this much more data out (GB)
            100000                AS min_increase_requests  -- param: or this many more HTTP requests
        SELECT
            if(status = 'attributed', owner_id, '(unattributed)') AS owner,
            toDate(event_time)                                     AS d,
            any(first_day)                                         AS p_first_day,
            any(spike_ratio)                                       AS p_spike_ratio,
            any(min_increase_gb)                                   AS p_min_increase_gb,
            any(min_increase_requests)                             AS p_min_increase_requests,
            toInt64(sum(bytes_out * sign))                         AS out_day,
            toInt64(sum(http_requests * sign))                     AS reqs_day,
            toInt64(sum(tcp_connections * sign))                   AS conns_day
        FROM usage_events
        WHERE status IN ('attributed', 'unattributed')
          AND event_time >= toDateTime(first_day - 1, 'UTC')
          AND event_time < toDateTime(last_day + 1, 'UTC')
        GROUP BY owner, d
    )
    GROUP BY owner
)
ARRAY JOIN
    days AS day,
    outs AS out_b,
    prev_outs AS prev_out,
    reqss AS reqs,
    prev_reqss AS prev_reqs,
    connss AS conns,
    prev_connss AS prev_conns
WHERE day >= from_day
  AND ((out_b >= ratio_min * prev_out AND out_b - prev_out >= gb_min * 1e9)
    OR (reqs >= ratio_min * prev_reqs AND reqs - prev_reqs >= reqs_min))
ORDER BY change_gb DESC, requests - prev_day_requests DESC, owner, day;
