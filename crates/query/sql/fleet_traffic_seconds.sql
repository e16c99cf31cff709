-- Each credential's latest attributed traffic per second (table fleet_traffic_seconds, migration
-- 0017) in the rows inserted since a time: what the fleet's timeline
-- (crates/query/src/api/fleet/timeline.rs) loads, whole (since 0) and then only the new rows.
-- Rows are not merged here (the timeline keeps the latest per second itself), so a second may
-- come more than once. Read verbatim by the HTTP API and by tests/python/test_fleet_chdb.py.
--
-- Placeholders: since (UInt32, Unix seconds; rows whose `inserted` minute is at or after it).
-- Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(credential_id)                  AS r_credential_id,
    toInt64(finalizeAggregation(last_us))    AS r_last_us
FROM fleet_traffic_seconds
WHERE inserted >= toDateTime(?)
