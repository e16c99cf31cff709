-- Feeds `usage_rollup_hourly` (0010) from every block inserted into `usage_events`, as 0007 feeds
-- `usage_rollup`; `botmeter migrate` fills it from older rows right after applying this file.
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_hourly_mv TO usage_rollup_hourly AS
SELECT
    toStartOfHour(event_time)             AS hour,
    status,
    owner_id,
    owner_kind,
    endpoint_id,
    sum(toInt64(bytes_in) * sign)         AS net_bytes_in,
    sum(toInt64(bytes_out) * sign)        AS net_bytes_out,
    sum(toInt64(http_requests) * sign)    AS net_http_requests,
    sum(toInt64(tcp_connections) * sign)  AS net_tcp_connections,
    sum(toInt64(sign))                    AS net_rows
FROM usage_events
GROUP BY hour, status, owner_id, owner_kind, endpoint_id
