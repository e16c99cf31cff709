-- Attributed usage per time bucket (and per credential or endpoint) of a set of owners and
-- credentials, in a time zone. Metrics are summed times `sign` (restated rows cancel; see
-- schemas/clickhouse/0002_usage_sign.sql). Read verbatim by the HTTP API (include_str! in
-- crates/query/src/api/report.rs) and by tests/python/test_reports_chdb.py.
--
-- Buckets: the local hour, day or month in the time zone (`all`: one bucket starting at 0, for
-- totals), as Unix seconds of its start. `endpoints` counts endpoints with at least one row that
-- nets to +1 in the bucket; `active_endpoint_hours` counts (endpoint, local hour) pairs whose
-- outgoing bytes net above 0, which is how ngrok bills: local hours nest in local days and months,
-- so the hours of a day bucket add up to the day's value.
--
-- Placeholders, in order: time zone (String, an IANA name as the tz database spells it; toTimeZone
-- needs a constant, which a bound literal is), granularity ('hour', 'day', 'month' or 'all'),
-- group ('credential', 'endpoint', 'credential_endpoint' for pairs keyed `<credential> <endpoint>`,
-- or '' for none), owner ids (Array(String)), credential ids
-- (Array(String)), status (String), from and to (Unix seconds). A row counts when its owner or its
-- credential is listed.
-- Must run on ClickHouse 18.16: aliases differ from column names, lists are `IN (SELECT arrayJoin(…))`
-- (18.16 has no `IN` of an array and no `has` of an empty one), and every column is cast to the
-- exact type the RowBinary reader expects.
SELECT
    toUInt32(bucket)                                          AS bucket_start,
    toString(grp)                                             AS group_key,
    toUInt64(sum(b_in))                                       AS sum_bytes_in,
    toUInt64(sum(b_out))                                      AS sum_bytes_out,
    toUInt64(sum(reqs))                                       AS sum_http_requests,
    toUInt64(sum(conns))                                      AS sum_tcp_connections,
    toUInt64(uniqExactIf(ep, net_rows > 0 AND ep != ''))      AS endpoints,
    toUInt64(uniqExactIf(ep, local_hour, b_out > 0 AND ep != '')) AS active_endpoint_hours
FROM
(
    WITH ? AS tz, ? AS granularity, ? AS group_by
    SELECT
        toStartOfHour(toTimeZone(event_time, tz)) AS local_hour,
        endpoint_id                               AS ep,
        credential_id                             AS cred,
        multiIf(
            granularity = 'hour', toUInt32(local_hour),
            granularity = 'day', toUInt32(toStartOfDay(local_hour)),
            granularity = 'month', toUInt32(toDateTime(toStartOfMonth(local_hour), tz)),
            toUInt32(0))                          AS bucket,
        multiIf(group_by = 'credential', cred, group_by = 'endpoint', ep,
                group_by = 'credential_endpoint', concat(cred, ' ', ep), '') AS grp,
        sum(bytes_in * sign)                      AS b_in,
        sum(bytes_out * sign)                     AS b_out,
        sum(http_requests * sign)                 AS reqs,
        sum(tcp_connections * sign)               AS conns,
        sum(sign)                                 AS net_rows
    FROM usage_events
    WHERE (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
           OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
      AND status = ?
      AND event_time >= toDateTime(?)
      AND event_time < toDateTime(?)
    GROUP BY local_hour, ep, cred
)
GROUP BY bucket_start, group_key
HAVING sum(net_rows) != 0
ORDER BY group_key, bucket_start
