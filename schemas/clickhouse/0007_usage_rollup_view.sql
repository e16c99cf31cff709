-- Feeds `usage_rollup` (0006) from every block inserted into `usage_events`. The view sees each
-- insert once, and every insert into `usage_events` is exactly once (positions stored with the
-- rows; `botmeter reattribute` inserts sign -1/+1 pairs), so the rollup is too. Rows written before
-- this view existed are brought in by `botmeter migrate`, which rebuilds the rollup from the raw
-- rows right after applying this file.
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_mv TO usage_rollup AS
SELECT
    toStartOfFifteenMinutes(event_time)   AS quarter,
    status,
    owner_id,
    owner_kind,
    credential_id,
    endpoint_id,
    sum(toInt64(bytes_in) * sign)         AS net_bytes_in,
    sum(toInt64(bytes_out) * sign)        AS net_bytes_out,
    sum(toInt64(http_requests) * sign)    AS net_http_requests,
    sum(toInt64(tcp_connections) * sign)  AS net_tcp_connections,
    sum(toInt64(sign))                    AS net_rows
FROM usage_events
GROUP BY quarter, status, owner_id, owner_kind, credential_id, endpoint_id
