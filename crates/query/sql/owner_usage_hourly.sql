-- Usage of one owner per hour: attributed traffic only, event_time in [from, to). Metrics are
-- summed times `sign` (restated rows cancel; see schemas/clickhouse/0002_usage_sign.sql).
-- Placeholders, in order: owner_id (String), status (String), from and to (Unix seconds).
-- Read verbatim by the HTTP API (include_str! in crates/query/src/api/usage.rs) and by
-- tests/python/test_migrations_chdb.py, so the SQL checked on current ClickHouse is the SQL served.
-- Must run on ClickHouse 18.16: aliases differ from column names, and every column is cast to the
-- exact type the RowBinary reader expects.
SELECT
    toUInt32(toStartOfHour(event_time)) AS hour_start,
    toUInt64(sum(bytes_in * sign))             AS sum_bytes_in,
    toUInt64(sum(bytes_out * sign))            AS sum_bytes_out,
    toUInt64(sum(http_requests * sign))        AS sum_http_requests,
    toUInt64(sum(tcp_connections * sign))      AS sum_tcp_connections
FROM usage_events
WHERE owner_id = ?
  AND status = ?
  AND event_time >= toDateTime(?)
  AND event_time < toDateTime(?)
GROUP BY hour_start
ORDER BY hour_start
