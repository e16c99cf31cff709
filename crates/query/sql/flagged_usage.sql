-- Attributed usage carrying anomaly flags over [from, to), per flag and owner (a row with two flags
-- counts under each). `events` is the net row count, metrics are summed times `sign`. Read verbatim
-- by the HTTP API (crates/query/src/api/anomalies.rs) and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: status (String, 'attributed'), from and to (Unix seconds).
SELECT
    toString(flag)                              AS f_flag,
    toString(owner_id)                          AS f_owner_id,
    toInt64(sum(sign))                          AS f_events,
    toUInt64(sum(bytes_in * sign))              AS f_bytes_in,
    toUInt64(sum(bytes_out * sign))             AS f_bytes_out,
    toUInt64(sum(http_requests * sign))         AS f_http_requests,
    toUInt64(sum(tcp_connections * sign))       AS f_tcp_connections
FROM usage_events
ARRAY JOIN flags AS flag
WHERE status = ?
  AND event_time >= toDateTime(?)
  AND event_time < toDateTime(?)
GROUP BY f_flag, f_owner_id
HAVING f_events != 0
ORDER BY f_flag, f_owner_id
