-- First and last attributed use of each listed credential over [from, to), and its net event
-- count (restated rows cancel). Read verbatim by the HTTP API (crates/query/src/api/audit.rs) and
-- by tests/python/test_reports_chdb.py.
-- Placeholders, in order: credential ids (Array(String)), status (String, 'attributed'), from and
-- to (Unix seconds).
SELECT
    toString(credential_id)              AS u_credential_id,
    toInt64(minIf(event_time_us, sign > 0)) AS u_first_us,
    toInt64(maxIf(event_time_us, sign > 0)) AS u_last_us,
    toInt64(sum(sign))                   AS u_events
FROM usage_events
WHERE credential_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
  AND status = ?
  AND event_time >= toDateTime(?)
  AND event_time < toDateTime(?)
GROUP BY u_credential_id
HAVING u_events > 0
ORDER BY u_credential_id
