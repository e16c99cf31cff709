-- Rollup of `usage_events` by status, owner, credential, endpoint and quarter hour, which the
-- usage, top, overage and customer reports read instead of the raw rows.
--
-- Exact by construction: every metric is summed times `sign` (restated rows cancel, as in the raw
-- table), and `net_rows` counts rows the same way, so a key whose rows cancel sums to zero
-- everywhere and SummingMergeTree drops it when it merges. Readers still `sum()` and `GROUP BY`
-- (parts merge in the background). The grain is a quarter hour, not an hour, so that reports in
-- a time zone with a half- or quarter-hour offset (Asia/Kolkata, Asia/Kathmandu) bucket exactly:
-- a UTC quarter hour lies inside one local hour in every zone.
--
-- Fed by the materialized view of 0007 on every insert into `usage_events`; `botmeter rollups
-- rebuild` recomputes months from the raw rows (idempotent: REPLACE PARTITION) and `botmeter
-- rollups check` compares the two.
CREATE TABLE IF NOT EXISTS usage_rollup
(
    quarter             DateTime('UTC'),
    status              String,
    owner_id            String,
    owner_kind          String,
    credential_id       String,
    endpoint_id         String,
    net_bytes_in        Int64,
    net_bytes_out       Int64,
    net_http_requests   Int64,
    net_tcp_connections Int64,
    net_rows            Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(quarter)
ORDER BY (status, owner_id, quarter, owner_kind, credential_id, endpoint_id)
