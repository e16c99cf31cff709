-- Per-owner, per-endpoint UTC hours of `usage_events`: what "active endpoint hours" are counted
-- from. The top-N report ranks owners from `usage_rollup_daily`, then reads only the top owners'
-- rows here for their totals, endpoints and active endpoint hours
-- (crates/query/sql/owner_totals_top.sql): a quarter of the rows of `usage_rollup` for the same
-- owners, and no credential to group away. Exact the same way as `usage_rollup` (sums times
-- `sign`, `net_rows`), kept and checked the same way (`botmeter rollups check|rebuild`). Hours are
-- UTC hours (`toStartOfHour` of a DateTime('UTC') stays in UTC on any server time zone).
CREATE TABLE IF NOT EXISTS usage_rollup_hourly
(
    hour                DateTime('UTC'),
    status              String,
    owner_id            String,
    owner_kind          String,
    endpoint_id         String,
    net_bytes_in        Int64,
    net_bytes_out       Int64,
    net_http_requests   Int64,
    net_tcp_connections Int64,
    net_rows            Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (status, owner_id, hour, endpoint_id, owner_kind)
