-- Rollup keys whose `usage_rollup` row differs from the `usage_events` rows it summarises, with
-- the difference (raw − rollup) of every metric: empty when the rollup is exact (invariant 6).
-- Compares at the rollup's own grain (quarter hour, status, owner, owner kind, credential,
-- endpoint), so a difference anywhere shows, not only in totals. Read verbatim by
-- crates/query/src/rollup.rs (`botmeter rollups check`).
-- Placeholders, in order: from and to (Unix seconds, whole quarter hours) for the raw rows, the
-- same two for the rollup, then the most differences to return (UInt64).
-- Runs on ClickHouse 18.16: aliases differ from the column names they are computed from.
SELECT
    toUInt32(q)            AS quarter,
    toString(st)           AS status,
    toString(o)            AS owner_id,
    toString(c)            AS credential_id,
    toString(e)            AS endpoint_id,
    toInt64(sum(d_in))     AS bytes_in,
    toInt64(sum(d_out))    AS bytes_out,
    toInt64(sum(d_reqs))   AS http_requests,
    toInt64(sum(d_conns))  AS tcp_connections,
    toInt64(sum(d_rows))   AS rows
FROM
(
    SELECT
        toStartOfFifteenMinutes(event_time)  AS q,
        status                               AS st,
        owner_id                             AS o,
        owner_kind                           AS k,
        credential_id                        AS c,
        endpoint_id                          AS e,
        sum(toInt64(bytes_in) * sign)        AS d_in,
        sum(toInt64(bytes_out) * sign)       AS d_out,
        sum(toInt64(http_requests) * sign)   AS d_reqs,
        sum(toInt64(tcp_connections) * sign) AS d_conns,
        sum(toInt64(sign))                   AS d_rows
    FROM usage_events
    WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?)
    GROUP BY q, st, o, k, c, e
    UNION ALL
    SELECT
        quarter                   AS q,
        status                    AS st,
        owner_id                  AS o,
        owner_kind                AS k,
        credential_id             AS c,
        endpoint_id               AS e,
        -sum(net_bytes_in)        AS d_in,
        -sum(net_bytes_out)       AS d_out,
        -sum(net_http_requests)   AS d_reqs,
        -sum(net_tcp_connections) AS d_conns,
        -sum(net_rows)            AS d_rows
    FROM usage_rollup
    WHERE quarter >= toDateTime(?) AND quarter < toDateTime(?)
    GROUP BY q, st, o, k, c, e
)
GROUP BY q, st, o, k, c, e
HAVING bytes_in != 0 OR bytes_out != 0 OR http_requests != 0 OR tcp_connections != 0 OR rows != 0
ORDER BY quarter, status, owner_id, credential_id, endpoint_id
LIMIT ?
