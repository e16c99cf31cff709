-- `usage_buckets.sql` answered from the rollup (`usage_rollup`, migrations 0006/0007): the same
-- placeholders, the same columns, the same numbers, for ranges whose ends are whole quarter hours
-- (the API reads the raw rows for any other range). Quarter hours nest in local hours in every
-- time zone, so the local-hour grouping below is exact. Read verbatim by the HTTP API (include_str!
-- in crates/query/src/api/report.rs) and by tests/python/test_reports_chdb.py.
--
-- Placeholders, in order: time zone, granularity, group, owner ids, credential ids, status, from
-- and to (Unix seconds, multiples of 900); see usage_buckets.sql for each.
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
        toStartOfHour(toTimeZone(quarter, tz))    AS local_hour,
        endpoint_id                               AS ep,
        credential_id                             AS cred,
        multiIf(
            granularity = 'hour', toUInt32(local_hour),
            granularity = 'day', toUInt32(toStartOfDay(local_hour)),
            granularity = 'month', toUInt32(toDateTime(toStartOfMonth(local_hour), tz)),
            toUInt32(0))                          AS bucket,
        multiIf(group_by = 'credential', cred, group_by = 'endpoint', ep,
                group_by = 'credential_endpoint', concat(cred, ' ', ep), '') AS grp,
        sum(net_bytes_in)                         AS b_in,
        sum(net_bytes_out)                        AS b_out,
        sum(net_http_requests)                    AS reqs,
        sum(net_tcp_connections)                  AS conns,
        sum(net_rows)                             AS rows_net
    FROM usage_rollup
    WHERE (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
           OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
      AND status = ?
      AND quarter >= toDateTime(?)
      AND quarter < toDateTime(?)
    GROUP BY local_hour, ep, cred
)
GROUP BY bucket_start, group_key
HAVING sum(rows_net) != 0
ORDER BY group_key, bucket_start
