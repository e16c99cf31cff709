-- Usage that is not attributed over [from, to), per reason (the missing link, or the dead-letter
-- reason class), and per hostname and port when the reason is no_endpoint (which hostnames carry
-- traffic nobody registered). `events` is the net row count, metrics are summed times `sign`, so
-- restated rows no longer count. Read verbatim by the HTTP API (crates/query/src/api/anomalies.rs)
-- and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: status (String, 'unattributed' or 'dead_letter'), from and to (Unix
-- seconds).
SELECT
    toString(unattributed_reason)                                   AS u_reason,
    toString(if(unattributed_reason = 'no_endpoint', hostname, '')) AS u_hostname,
    toUInt16(if(unattributed_reason = 'no_endpoint', port, 0))      AS u_port,
    toInt64(sum(sign))                                              AS u_events,
    toUInt64(sum(bytes_in * sign))                                  AS u_bytes_in,
    toUInt64(sum(bytes_out * sign))                                 AS u_bytes_out,
    toUInt64(sum(http_requests * sign))                             AS u_http_requests,
    toUInt64(sum(tcp_connections * sign))                           AS u_tcp_connections
FROM usage_events
WHERE status = ?
  AND event_time >= toDateTime(?)
  AND event_time < toDateTime(?)
GROUP BY u_reason, u_hostname, u_port
HAVING u_events != 0
ORDER BY u_reason, u_hostname, u_port
