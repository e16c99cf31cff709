-- Each credential's latest attributed traffic per second (table fleet_traffic_seconds, migration
-- 0017) in the rows inserted since a time: what the fleet's timeline
-- (crates/query/src/api/fleet/timeline.rs) loads, whole (since 0) and then only the new rows.
-- Rows are not merged here (the timeline keeps the latest per second itself), so a second may
-- come more than once. Read verbatim by the HTTP API and by tests/python/test_fleet_chdb.py.
--
-- A whole read is split into parts by credential (each part its own query, within the query
-- deadline): part `part` of `parts` reads the credentials whose id hashes to it.
--
-- Placeholders, in order: since (UInt32, Unix seconds; rows whose `inserted` minute is at or
-- after it), parts (UInt64, at least 1), part (UInt64, below parts).
-- Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(credential_id)                  AS r_credential_id,
    toInt64(finalizeAggregation(last_us))    AS r_last_us
FROM fleet_traffic_seconds
WHERE inserted >= toDateTime(?)
  AND cityHash64(credential_id) % ? = ?
