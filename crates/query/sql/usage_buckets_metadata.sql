-- Attributed usage per time bucket and per value of a credential metadata key, as of each
-- event's time (`group_by=metadata.<key>`; crates/query/src/api/metadata_groups.rs computes each
-- credential's values from its versions). The same columns and the same numbers per group as
-- `usage_buckets.sql` per credential would give if the credentials of one value were one.
-- Read verbatim by the HTTP API and by tests/python/test_reports_chdb.py.
--
-- Two sources of raw rows, summed per (local hour, endpoint, value) before endpoints and
-- endpoint-hours are counted, so an endpoint used on both sides of a value change within one hour
-- is one endpoint-hour of each value:
-- - credentials with one value over the whole range: the value looked up by credential id
--   (`(none)` for a credential not listed: no version names the key);
-- - credentials whose value changes within the range: each row paired with the bound spans
--   (ARRAY JOIN, after the filter, so only their rows are multiplied) and kept with the span of
--   its credential that holds its `event_time_us`. A credential's spans are disjoint, so each row
--   is counted once.
-- Raw rows only: the rollups have no metadata, and a value may change inside a quarter hour.
--
-- Placeholders, in order: time zone, granularity ('hour', 'day', 'month' or 'all'); then for the
-- constant credentials: time zone, their ids and values (two Array(String) of one length; the ids
-- twice more), owner ids, credential ids (Array(String): the scope, as usage_buckets.sql), the
-- changing credentials' ids (Array(String)), status, from and to (Unix seconds); then for the
-- changing credentials: time zone, owner ids, credential ids, their ids, status, from and to, and
-- the spans as four arrays of one length: credential id, start and end (Array(Int64), Unix
-- microseconds), value.
-- Must run on ClickHouse 18.16: every partial sum is cast to Int64 so that both sides of the
-- UNION ALL have the same types; the spans are an ARRAY JOIN, not a lambda.
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
    WITH ? AS tz, ? AS granularity
    SELECT
        local_hour,
        ep,
        grp,
        multiIf(
            granularity = 'hour', toUInt32(local_hour),
            granularity = 'day', toUInt32(toStartOfDay(local_hour)),
            granularity = 'month', toUInt32(toDateTime(toStartOfMonth(local_hour), tz)),
            toUInt32(0))                          AS bucket,
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
            if(indexOf(CAST(? AS Array(String)), credential_id) = 0, '(none)',
               arrayElement(CAST(? AS Array(String)),
                            indexOf(CAST(? AS Array(String)), credential_id))) AS grp,
            toInt64(sum(bytes_in * sign))             AS p_in,
            toInt64(sum(bytes_out * sign))            AS p_out,
            toInt64(sum(http_requests * sign))        AS p_reqs,
            toInt64(sum(tcp_connections * sign))      AS p_conns,
            toInt64(sum(sign))                        AS p_rows
        FROM usage_events
        WHERE (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
               OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
          AND NOT credential_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
          AND status = ?
          AND event_time >= toDateTime(?)
          AND event_time < toDateTime(?)
        GROUP BY local_hour, ep, grp
        UNION ALL
        SELECT
            toStartOfHour(toTimeZone(r_time, ?))      AS local_hour,
            r_ep                                      AS ep,
            span_value                                AS grp,
            toInt64(sum(r_in))                        AS p_in,
            toInt64(sum(r_out))                       AS p_out,
            toInt64(sum(r_reqs))                      AS p_reqs,
            toInt64(sum(r_conns))                     AS p_conns,
            toInt64(sum(r_sign))                      AS p_rows
        FROM
        (
            SELECT
                event_time                    AS r_time,
                event_time_us                 AS r_time_us,
                endpoint_id                   AS r_ep,
                credential_id                 AS r_cred,
                bytes_in * sign               AS r_in,
                bytes_out * sign              AS r_out,
                http_requests * sign          AS r_reqs,
                tcp_connections * sign        AS r_conns,
                sign                          AS r_sign
            FROM usage_events
            WHERE (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
                   OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
              AND credential_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
              AND status = ?
              AND event_time >= toDateTime(?)
              AND event_time < toDateTime(?)
        )
        ARRAY JOIN
            CAST(? AS Array(String)) AS span_credential,
            CAST(? AS Array(Int64))  AS span_from_us,
            CAST(? AS Array(Int64))  AS span_to_us,
            CAST(? AS Array(String)) AS span_value
        WHERE span_credential = r_cred
          AND r_time_us >= span_from_us
          AND r_time_us < span_to_us
        GROUP BY local_hour, ep, grp
    )
    GROUP BY local_hour, ep, grp
)
GROUP BY bucket_start, group_key
HAVING sum(rows_net) != 0
ORDER BY group_key, bucket_start
