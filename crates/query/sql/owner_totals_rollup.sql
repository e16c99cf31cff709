-- `owner_totals.sql` answered from the rollup (`usage_rollup`, migrations 0006/0007): the same
-- placeholders, the same columns, the same numbers, for ranges whose ends are whole quarter hours
-- (the API reads the raw rows for any other range). Read verbatim by the HTTP API
-- (crates/query/src/api/top.rs) and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: the ranking metric, status, from and to (Unix seconds, multiples of
-- 900), limit; see owner_totals.sql.
WITH ? AS metric
SELECT
    toString(owner)                                              AS o_owner_id,
    toString(any(kind))                                          AS o_owner_kind,
    toUInt64(sum(b_in))                                          AS o_bytes_in,
    toUInt64(sum(b_out))                                         AS o_bytes_out,
    toUInt64(sum(reqs))                                          AS o_http_requests,
    toUInt64(sum(conns))                                         AS o_tcp_connections,
    toUInt64(uniqExactIf(ep, rows_net > 0 AND ep != ''))         AS o_endpoints,
    toUInt64(uniqExactIf(ep, hour, b_out > 0 AND ep != ''))      AS o_active_endpoint_hours
FROM
(
    SELECT
        owner_id                    AS owner,
        any(owner_kind)             AS kind,
        endpoint_id                 AS ep,
        toStartOfHour(quarter)      AS hour,
        sum(net_bytes_in)           AS b_in,
        sum(net_bytes_out)          AS b_out,
        sum(net_http_requests)      AS reqs,
        sum(net_tcp_connections)    AS conns,
        sum(net_rows)               AS rows_net
    FROM usage_rollup
    WHERE status = ?
      AND quarter >= toDateTime(?)
      AND quarter < toDateTime(?)
    GROUP BY owner, ep, hour
)
GROUP BY o_owner_id
HAVING sum(rows_net) != 0
ORDER BY
    multiIf(metric = 'bytes_in', o_bytes_in,
            metric = 'bytes_out', o_bytes_out,
            metric = 'http_requests', o_http_requests,
            metric = 'tcp_connections', o_tcp_connections,
            o_active_endpoint_hours) DESC,
    o_owner_id
LIMIT ?
