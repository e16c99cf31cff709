-- `usage_buckets.sql` for a scope with owners that count in some spans of the range only: a
-- customer's bot users whose metadata named the customer for part of the range (see
-- crates/query/src/api/tenancy.rs). The same columns and the same numbers as `usage_buckets.sql`
-- would give if it could filter each owner by time. Read verbatim by the HTTP API (include_str! in
-- crates/query/src/api/report.rs) and by tests/python/test_reports_chdb.py.
--
-- Four sources, summed per (local hour, endpoint, credential) before anything is counted, as in
-- `usage_buckets_ragged.sql`, so an endpoint used on both sides of a span's end within one hour is
-- one endpoint-hour, never two:
-- - the owners and credentials that count over the whole range, as `usage_buckets_ragged.sql`
--   reads them: raw rows for the ragged edges, the rollup for the whole quarter hours (an aligned
--   range has empty edges; a range without a whole quarter hour binds an empty middle at `from`);
-- - the partly counted owners, by owner id (the primary key's second column after status in the
--   rollup, the first in the raw rows, so only their rows are read). A credential's rows follow
--   its owner, which is the owner of every attributed row of it (ownership never changes). Each
--   row is paired with every span (ARRAY JOIN of the bound spans, after the filter so that only
--   those rows are multiplied) and kept with a span of its owner: from the rollup, the quarter
--   hours that lie whole inside a span; from the raw rows, only in the quarter hours a span's
--   end cuts (bound as a list, which the primary key serves), the rows inside a span whose
--   quarter hour does not lie whole inside it. Spans of one owner are disjoint, so each row is
--   counted once, by one of the two; a row that also matches the whole-range lists is left to
--   them.
--
-- Placeholders, in order: time zone, granularity, group (see usage_buckets.sql); then for the raw
-- edges: time zone, owner ids, credential ids, status, from, middle start, middle end, to; then for
-- the rollup: time zone, owner ids, credential ids, status, middle start, middle end (Unix seconds;
-- the middle's ends are multiples of 900 with from <= middle start <= middle end <= to); then for
-- the partly counted owners' raw rows: time zone, their owner ids (Array(String)), the whole-range
-- owner ids and credential ids again, status, from and to (Unix seconds), the quarter hours cut by
-- a span's end (Array of Unix seconds), then the spans as three arrays of one length: owner id
-- (Array(String)), start and end (Array(Int64), Unix microseconds); then for their rollup rows:
-- time zone, their owner ids, the whole-range owner ids and credential ids again, status, from
-- and to, and the spans again.
-- Must run on ClickHouse 18.16: every partial sum is cast to Int64 so that the sides of the
-- UNION ALL have the same types (18.16 does not convert them); the spans are an ARRAY JOIN, not a
-- lambda (18.16 does not read a column that only a lambda uses: "Unknown identifier").
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
        UNION ALL
        SELECT
            toStartOfHour(toTimeZone(r_time, ?))      AS local_hour,
            r_ep                                      AS ep,
            r_cred                                    AS cred,
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
                toInt64(toUInt32(toStartOfFifteenMinutes(event_time))) * 1000000 AS r_quarter_us,
                owner_id                      AS r_owner,
                endpoint_id                   AS r_ep,
                credential_id                 AS r_cred,
                bytes_in * sign               AS r_in,
                bytes_out * sign              AS r_out,
                http_requests * sign          AS r_reqs,
                tcp_connections * sign        AS r_conns,
                sign                          AS r_sign
            FROM usage_events
            WHERE owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
              AND NOT (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
                       OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
              AND status = ?
              AND event_time >= toDateTime(?)
              AND event_time < toDateTime(?)
              AND toStartOfFifteenMinutes(event_time) IN (SELECT arrayJoin(CAST(? AS Array(DateTime('UTC')))))
        )
        ARRAY JOIN
            CAST(? AS Array(String)) AS span_owner,
            CAST(? AS Array(Int64))  AS span_from_us,
            CAST(? AS Array(Int64))  AS span_to_us
        WHERE span_owner = r_owner
          AND r_time_us >= span_from_us
          AND r_time_us < span_to_us
          AND NOT (r_quarter_us >= span_from_us AND r_quarter_us + 900000000 <= span_to_us)
        GROUP BY local_hour, ep, cred
        UNION ALL
        SELECT
            toStartOfHour(toTimeZone(q_quarter, ?))   AS local_hour,
            q_ep                                      AS ep,
            q_cred                                    AS cred,
            toInt64(sum(q_in))                        AS p_in,
            toInt64(sum(q_out))                       AS p_out,
            toInt64(sum(q_reqs))                      AS p_reqs,
            toInt64(sum(q_conns))                     AS p_conns,
            toInt64(sum(q_rows))                      AS p_rows
        FROM
        (
            SELECT
                quarter                       AS q_quarter,
                toInt64(toUInt32(quarter)) * 1000000 AS q_quarter_us,
                owner_id                      AS q_owner,
                endpoint_id                   AS q_ep,
                credential_id                 AS q_cred,
                net_bytes_in                  AS q_in,
                net_bytes_out                 AS q_out,
                net_http_requests             AS q_reqs,
                net_tcp_connections           AS q_conns,
                net_rows                      AS q_rows
            FROM usage_rollup
            WHERE owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
              AND NOT (owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
                       OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
              AND status = ?
              AND quarter >= toDateTime(?)
              AND quarter < toDateTime(?)
        )
        ARRAY JOIN
            CAST(? AS Array(String)) AS span_owner,
            CAST(? AS Array(Int64))  AS span_from_us,
            CAST(? AS Array(Int64))  AS span_to_us
        WHERE span_owner = q_owner
          AND q_quarter_us >= span_from_us
          AND q_quarter_us + 900000000 <= span_to_us
        GROUP BY local_hour, ep, cred
    )
    GROUP BY local_hour, ep, cred
)
GROUP BY bucket_start, group_key
HAVING sum(rows_net) != 0
ORDER BY group_key, bucket_start
