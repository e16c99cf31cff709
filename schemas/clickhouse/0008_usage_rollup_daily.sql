-- Per-owner daily totals of `usage_events`, for ranking owners (top-N, overage) without reading
-- every endpoint's quarter hours: the ranking reads one row per owner and day, then only the
-- top owners' rows of `usage_rollup` give their endpoints and active endpoint hours
-- (crates/query/sql/owner_totals_top.sql). Exact the same way as `usage_rollup` (sums times
-- `sign`, `net_rows`), kept and checked the same way (`botmeter rollups check|rebuild`). Days are
-- UTC days (`toStartOfDay` of a DateTime('UTC') stays in UTC on any server time zone).
CREATE TABLE IF NOT EXISTS usage_rollup_daily
(
    day                 DateTime('UTC'),
    status              String,
    owner_id            String,
    owner_kind          String,
    net_bytes_in        Int64,
    net_bytes_out       Int64,
    net_http_requests   Int64,
    net_tcp_connections Int64,
    net_rows            Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (status, day, owner_id, owner_kind)
