-- The audit trail of a set of ids: control-plane events whose object is one of them (lifecycle of
-- a credential, bot user, endpoint or session), that name one of them as owner (including rejected
-- attempts to move a credential to it), whose principal is one of them, or that were made with one
-- of them as API key, with the object's `active` field as JSON text (a bot user updated to `false`
-- is a deactivation) and its `source` (`botmeter-sync` for what `botmeter sync` synthesized, empty
-- for ngrok's own). Oldest first, at most `limit`. Read verbatim by the HTTP API
-- (crates/query/src/api/audit.rs) and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: ids (Array(String)) four times, from and to (Unix seconds), limit.
SELECT
    toString(event_id)                 AS e_event_id,
    toString(event_type)               AS e_event_type,
    toInt64(event_time_us)             AS e_time_us,
    toString(principal_id)             AS e_principal_id,
    toString(principal_subject)        AS e_principal_subject,
    toString(principal_credential_id)  AS e_principal_credential_id,
    toString(object_id)                AS e_object_id,
    toString(owner_id)                 AS e_owner_id,
    toString(visitParamExtractRaw(object, 'active')) AS e_active,
    anomalies                          AS e_anomalies,
    toString(source)                   AS e_source
FROM control_events
WHERE (object_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
       OR owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
       OR principal_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
       OR principal_credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
  AND event_time >= toDateTime(?)
  AND event_time < toDateTime(?)
ORDER BY e_time_us, e_event_id
LIMIT ?
