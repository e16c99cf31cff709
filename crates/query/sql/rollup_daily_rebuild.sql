-- One month of `usage_rollup_daily` computed from `usage_events`, into a scratch table made with
-- `CREATE TABLE … AS usage_rollup_daily`; crates/query/src/rollup.rs swaps it in with REPLACE
-- PARTITION. The SELECT is the view's (schemas/clickhouse/0009_usage_rollup_daily_view.sql) plus
-- the month; a unit test keeps the two alike.
-- Placeholders, in order: the scratch table (an identifier), the month (UInt32, YYYYMM).
INSERT INTO ?
SELECT
    toStartOfDay(event_time)              AS day,
    status,
    owner_id,
    owner_kind,
    sum(toInt64(bytes_in) * sign)         AS net_bytes_in,
    sum(toInt64(bytes_out) * sign)        AS net_bytes_out,
    sum(toInt64(http_requests) * sign)    AS net_http_requests,
    sum(toInt64(tcp_connections) * sign)  AS net_tcp_connections,
    sum(toInt64(sign))                    AS net_rows
FROM usage_events
WHERE toYYYYMM(event_time) = ?
GROUP BY day, status, owner_id, owner_kind
