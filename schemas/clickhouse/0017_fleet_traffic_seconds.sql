-- Each credential's attributed traffic by second, which `botmeter serve` loads into its fleet
-- timeline (crates/query/src/api/fleet/timeline.rs) so that `/v1/fleet?at=…` needs no read of
-- the usage rows: a credential's latest traffic before a whole second `at` is the latest of its
-- seconds before `at`, exactly (an event of an earlier second is before `at`, one of a later
-- second is not).
--
-- `inserted` is the minute the row was written (the view's `now()`): the timeline, loaded once
-- whole, then reads only the rows inserted since its last read (the sorting key starts with it),
-- so usage that arrives late (an old event time) is picked up like any other. One row per
-- credential and second with traffic (fewer than the usage rows when a credential has several
-- events in a second), an AggregatingMergeTree of max states: idempotent like the tables of 0013
-- (an insert seen twice, the backfill overlapping the view's first inserts change nothing).
-- Runs on ClickHouse 18.16 and current ClickHouse; statements are safe to repeat.
CREATE TABLE IF NOT EXISTS fleet_traffic_seconds
(
    inserted      DateTime('UTC'),
    credential_id String,
    event_second  DateTime('UTC'),
    last_us       AggregateFunction(max, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(inserted)
ORDER BY (inserted, credential_id, event_second)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS fleet_traffic_seconds_mv TO fleet_traffic_seconds AS
SELECT
    toStartOfMinute(now())  AS inserted,
    credential_id,
    event_time              AS event_second,
    maxState(event_time_us) AS last_us
FROM usage_events
WHERE status = 'attributed'
  AND credential_id != ''
  AND sign > 0
GROUP BY inserted, credential_id, event_second
;
INSERT INTO fleet_traffic_seconds
SELECT
    toStartOfMinute(now())  AS inserted,
    credential_id,
    event_time              AS event_second,
    maxState(event_time_us) AS last_us
FROM usage_events
WHERE status = 'attributed'
  AND credential_id != ''
  AND sign > 0
GROUP BY inserted, credential_id, event_second
