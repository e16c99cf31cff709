-- Attributed usage per owner over [from, to), ranked by one metric (top owners, the owner list,
-- overage). Metrics are summed times `sign`; `endpoints` are endpoints with rows netting to +1;
-- `active_endpoint_hours` are (endpoint, UTC hour) pairs whose outgoing bytes net above 0. Owners
-- whose rows net to nothing are left out. Read verbatim by the HTTP API
-- (crates/query/src/api/top.rs) and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: the ranking metric ('bytes_in', 'bytes_out', 'http_requests',
-- 'tcp_connections' or 'active_endpoint_hours'), status (String), from and to (Unix seconds), limit.
-- Ties rank by owner id.
WITH ? AS metric
SELECT
    toString(owner)                                              AS o_owner_id,
    toString(any(kind))                                          AS o_owner_kind,
    toUInt64(sum(b_in))                                          AS o_bytes_in,
    toUInt64(sum(b_out))                                         AS o_bytes_out,
    toUInt64(sum(reqs))                                          AS o_http_requests,
    toUInt64(sum(conns))                                         AS o_tcp_connections,
    toUInt64(uniqExactIf(ep, net_rows > 0 AND ep != ''))         AS o_endpoints,
    toUInt64(uniqExactIf(ep, hour, b_out > 0 AND ep != ''))      AS o_active_endpoint_hours
FROM
(
    SELECT
        owner_id                    AS owner,
        any(owner_kind)             AS kind,
        endpoint_id                 AS ep,
        toStartOfHour(event_time)   AS hour,
        sum(bytes_in * sign)        AS b_in,
        sum(bytes_out * sign)       AS b_out,
        sum(http_requests * sign)   AS reqs,
        sum(tcp_connections * sign) AS conns,
        sum(sign)                   AS net_rows
    FROM usage_events
    WHERE status = ?
      AND event_time >= toDateTime(?)
      AND event_time < toDateTime(?)
    GROUP BY owner, ep, hour
)
GROUP BY o_owner_id
HAVING sum(net_rows) != 0
ORDER BY
    multiIf(metric = 'bytes_in', o_bytes_in,
            metric = 'bytes_out', o_bytes_out,
            metric = 'http_requests', o_http_requests,
            metric = 'tcp_connections', o_tcp_connections,
            o_active_endpoint_hours) DESC,
    o_owner_id
LIMIT ?
