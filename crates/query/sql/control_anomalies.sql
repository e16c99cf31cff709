-- Control-plane events with anomalies over [from, to) (owner_change_rejected: a credential event
-- that tried to change its owner; api_key_owner_mismatch: a principal acting with an API key it
-- does not own), newest first, at most `limit`. Read verbatim by the HTTP API
-- (crates/query/src/api/anomalies.rs) and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: from and to (Unix seconds), limit.
SELECT
    toString(event_id)                AS a_event_id,
    toString(event_type)              AS a_event_type,
    toInt64(event_time_us)            AS a_time_us,
    toString(anomaly)                 AS a_anomaly,
    toString(principal_id)            AS a_principal_id,
    toString(principal_credential_id) AS a_principal_credential_id,
    toString(object_id)               AS a_object_id,
    toString(owner_id)                AS a_owner_id
FROM control_events
ARRAY JOIN anomalies AS anomaly
WHERE event_time >= toDateTime(?)
  AND event_time < toDateTime(?)
ORDER BY a_time_us DESC, a_event_id, a_anomaly
LIMIT ?
