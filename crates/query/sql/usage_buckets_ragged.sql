-- `usage_buckets.sql` for a range whose ends are not whole quarter hours: its aligned middle is
-- read from the rollup (`usage_rollup`) and only its two ragged edges from the raw rows, so a year
-- that starts at 00:00:01 costs about what an aligned year does. The same columns and the same
-- numbers as `usage_buckets.sql` over the whole range. Read verbatim by the HTTP API (include_str!
-- in crates/query/src/api/report.rs) and by tests/python/test_reports_chdb.py.
--
-- The two sources are first summed per (local hour, endpoint, credential) and only then counted:
-- an edge quarter and a middle quarter of the same local hour are one group, so `endpoints` and
-- `active_endpoint_hours` see their net sums, as they would from the raw rows alone.
--
-- Placeholders, in order: time zone, granularity, group (see usage_buckets.sql); then for the raw
-- edges: time zone, owner ids, credential ids, status, from, middle start, middle end, to; then for
-- the rollup: time zone, owner ids, credential ids, status, middle start, middle end (Unix seconds;
-- the middle's ends are multiples of 900 with from <= middle start < middle end <= to).
-- Must run on ClickHouse 18.16: every partial sum is cast to Int64 so that both sides of the
-- UNION ALL have the same types (18.16 does not convert them).
SELECT
    toUInt32(bucket)                                          AS bucket_start,
    toString(grp)                                             AS group_key,
    toUInt64(sum(b_in))                                       AS sum_bytes_in,
    toUInt64(sum(b_out))                                      AS sum_bytes_out,
    toUInt64(sum(reqs))                                       AS sum_http_requests,
    toUInt64(sum(conns))                                      AS sum_tcp_connections,
    toUInt64(uniqExactIf(ep, rows_net > 0 AND ep != ''))      AS endpoints,
    toUInt64(uniqExactIf(ep, local_hour, b_out > 0 AND ep != '')) AS active_endpoint_hours
FROM
(
    WITH ? AS tz, ? AS granularity, ? AS group_by
    SELECT
        local_hour,
        ep,
        cred,
        multiIf(
            granularity = 'hour', toUInt32(local_hour),
            granularity = 'day', toUInt32(toStartOfDay(local_hour)),
            granularity = 'month', toUInt32(toDateTime(toStartOfMonth(local_hour), tz)),
            toUInt32(0))                          AS bucket,
        multiIf(group_by = 'credential', cred, group_by = 'endpoint', ep,
                group_by = 'credential_endpoint', concat(cred, ' ', ep), '') AS grp,
        sum(p_in)                                 AS b_in,
        sum(p_out)                                AS b_out,
        sum(p_reqs)                               AS reqs,
        sum(p_conns)                              AS conns,
        sum(p_rows)                               AS rows_net
    FROM
    (
        SELECT
            toStartOfHour(toTimeZone(event_time, ?))  AS local_hour,
            endpoint_id                               AS ep,
            credential_id                             AS cred,
            toInt64(sum(bytes_in * sign))             AS p_in,
            toInt64(sum(bytes_out * sign))            AS p_out,
            toInt64(sum(http_requests * sign))        AS p_reqs,
            toInt64(sum(tcp_connections * sign))      AS p_conns,
            toInt64(sum(sign))                        AS p_rows
        FROM usage_events
        WHERE (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
               OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
          AND status = ?
          AND ((event_time >= toDateTime(?) AND event_time < toDateTime(?))
               OR (event_time >= toDateTime(?) AND event_time < toDateTime(?)))
        GROUP BY local_hour, ep, cred
        UNION ALL
        SELECT
            toStartOfHour(toTimeZone(quarter, ?))     AS local_hour,
            endpoint_id                               AS ep,
            credential_id                             AS cred,
            toInt64(sum(net_bytes_in))                AS p_in,
            toInt64(sum(net_bytes_out))               AS p_out,
            toInt64(sum(net_http_requests))           AS p_reqs,
            toInt64(sum(net_tcp_connections))         AS p_conns,
            toInt64(sum(net_rows))                    AS p_rows
        FROM usage_rollup
        WHERE (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
               OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
          AND status = ?
          AND quarter >= toDateTime(?)
          AND quarter < toDateTime(?)
        GROUP BY local_hour, ep, cred
    )
    GROUP BY local_hour, ep, cred
)
GROUP BY bucket_start, group_key
HAVING sum(rows_net) != 0
ORDER BY group_key, bucket_start
