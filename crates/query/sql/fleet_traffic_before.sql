-- The latest traffic before a time `at` of credentials whose latest traffic of all time is not
-- before it (fleet_credentials.sql reads that from the state table; `/v1/fleet` as of a past time
-- comes here): per credential, the latest usage time of an attributed usage row with sign +1
-- before `at`. Read verbatim by the HTTP API (crates/query/src/api/fleet.rs) and by
-- tests/python/test_fleet_chdb.py.
--
-- Placeholders, in order: at (UInt32, Unix seconds), all (UInt8: 1 for every credential),
-- credential ids (Array(String)).
-- Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(credential_id)  AS b_credential_id,
    toInt64(max(event_time_us)) AS b_last_traffic_us
FROM usage_events
WHERE status = 'attributed'
  AND credential_id != ''
  AND sign > 0
  AND event_time < toDateTime(?)
  AND (? = 1 OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
GROUP BY credential_id
ORDER BY b_credential_id
