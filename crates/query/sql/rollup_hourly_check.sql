-- Keys whose `usage_rollup_hourly` row differs from the `usage_events` rows it summarises, with
-- the difference (raw − rollup) of every metric; empty when the hourly rollup is exact. Read
-- verbatim by crates/query/src/rollup.rs. The columns are those of rollup_check.sql (credential
-- empty: this rollup has none; `quarter` holds the hour's start).
-- Placeholders, in order: from and to (Unix seconds) for the raw rows, the same two for the
-- rollup, then the most differences to return (UInt64).
SELECT
    toUInt32(d)            AS quarter,
    toString(st)           AS status,
    toString(o)            AS owner_id,
    ''                     AS credential_id,
    toString(e)            AS endpoint_id,
    toInt64(sum(d_in))     AS bytes_in,
    toInt64(sum(d_out))    AS bytes_out,
    toInt64(sum(d_reqs))   AS http_requests,
    toInt64(sum(d_conns))  AS tcp_connections,
    toInt64(sum(d_rows))   AS rows
FROM
(
    SELECT
        toStartOfHour(event_time)            AS d,
        status                               AS st,
        owner_id                             AS o,
        owner_kind                           AS k,
        endpoint_id                          AS e,
        sum(toInt64(bytes_in) * sign)        AS d_in,
        sum(toInt64(bytes_out) * sign)       AS d_out,
        sum(toInt64(http_requests) * sign)   AS d_reqs,
        sum(toInt64(tcp_connections) * sign) AS d_conns,
        sum(toInt64(sign))                   AS d_rows
    FROM usage_events
    WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)
    GROUP BY d, st, o, k, e
    UNION ALL
    SELECT
        hour                      AS d,
        status                    AS st,
        owner_id                  AS o,
        owner_kind                AS k,
        endpoint_id               AS e,
        -sum(net_bytes_in)        AS d_in,
        -sum(net_bytes_out)       AS d_out,
        -sum(net_http_requests)   AS d_reqs,
        -sum(net_tcp_connections) AS d_conns,
        -sum(net_rows)            AS d_rows
    FROM usage_rollup_hourly
    WHERE hour >= toDateTime(?) AND hour < toDateTime(?)
    GROUP BY d, st, o, k, e
)
GROUP BY d, st, o, k, e
HAVING bytes_in != 0 OR bytes_out != 0 OR http_requests != 0 OR tcp_connections != 0 OR rows != 0
ORDER BY quarter, status, owner_id, endpoint_id
LIMIT ?
