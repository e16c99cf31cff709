-- `owner_totals.sql` for ranges on whole UTC days, ranked by a summed metric (not
-- `active_endpoint_hours`): the owners are ranked from `usage_rollup_daily` (one row per owner and
-- day), and only the top ones are read from `usage_rollup_hourly` (one row per owner, endpoint and
-- hour) for their totals, endpoints and active endpoint hours. Same columns, same numbers, same
-- order as owner_totals.sql: the ranking sums the same rows (times `sign`), leaves out the same
-- owners (rows netting to nothing) and breaks ties by owner id.
-- An endpoint counts when its rows net above 0 over the range; owner_totals.sql asks it of some
-- hour: the same, since a message's rows net to 1 or 0 within its own hour (a restating pair
-- shares the original's event time).
-- Read verbatim by the HTTP API (crates/query/src/api/top.rs) and by
-- tests/python/test_reports_chdb.py.
-- Placeholders, in order: the ranking metric ('bytes_in', 'bytes_out', 'http_requests' or
-- 'tcp_connections'), status, from and to (Unix seconds, whole UTC days), then for the ranking:
-- status, from, to, the metric three times, limit; then the limit again.
-- Runs on ClickHouse 18.16: the ranking is an `IN` subquery (no CTEs), binding the metric again
-- (a WITH alias does not reach into it).
WITH ? AS metric
SELECT
    toString(owner)                                              AS o_owner_id,
    toString(any(kind))                                          AS o_owner_kind,
    toUInt64(sum(b_in))                                          AS o_bytes_in,
    toUInt64(sum(b_out))                                         AS o_bytes_out,
    toUInt64(sum(reqs))                                          AS o_http_requests,
    toUInt64(sum(conns))                                         AS o_tcp_connections,
    toUInt64(countIf(rows_net > 0 AND ep != ''))                 AS o_endpoints,
    toUInt64(sumIf(hours, ep != ''))                             AS o_active_endpoint_hours
FROM
(
    -- One row per endpoint; its UTC hours with outgoing bytes netting above 0 are counted from a
    -- sumMap by hour (grouping by endpoint and hour with String keys took twice as long).
    SELECT
        owner_id                    AS owner,
        any(owner_kind)             AS kind,
        endpoint_id                 AS ep,
        sum(net_bytes_in)           AS b_in,
        sum(net_bytes_out)          AS b_out,
        sum(net_http_requests)      AS reqs,
        sum(net_tcp_connections)    AS conns,
        sum(net_rows)               AS rows_net,
        arrayCount(x -> x > 0,
            tupleElement(sumMap([toUInt32(hour)], [net_bytes_out]), 2)) AS hours
    FROM usage_rollup_hourly
    WHERE status = ?
      AND hour >= toDateTime(?)
      AND hour < toDateTime(?)
      AND owner_id IN
      (
          SELECT d_owner
          FROM
          (
              SELECT
                  owner_id                 AS d_owner,
                  sum(net_bytes_in)        AS d_in,
                  sum(net_bytes_out)       AS d_out,
                  sum(net_http_requests)   AS d_reqs,
                  sum(net_tcp_connections) AS d_conns,
                  sum(net_rows)            AS d_rows
              FROM usage_rollup_daily
              WHERE status = ?
                AND day >= toDateTime(?)
                AND day < toDateTime(?)
              GROUP BY d_owner
              HAVING d_rows != 0
              ORDER BY
                  multiIf(? = 'bytes_in', d_in,
                          ? = 'bytes_out', d_out,
                          ? = 'http_requests', d_reqs,
                          d_conns) DESC,
                  d_owner
              LIMIT ?
          )
      )
    GROUP BY owner, ep
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
