-- The created and updated events of the listed credentials before a time, oldest first, each
-- with the credential's JSON object: the versions of its metadata. The API reads a metadata key at
-- the top level of each version's `metadata` (crates/query/src/api/metadata_groups.rs; ngrok's
-- metadata is a string holding a JSON object) and groups usage by the value in force at each
-- event's time. Events that tried to change a credential's owner are ignored, as everywhere.
-- Read verbatim by the HTTP API and by tests/python/test_reports_chdb.py.
-- Placeholders, in order: credential ids (Array(String)), before (Int64, Unix microseconds;
-- events at or after it are not read).
SELECT
    toString(object_id)      AS v_credential_id,
    toInt64(event_time_us)   AS v_time_us,
    toString(object)         AS v_object
FROM control_events
WHERE object_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
  AND event_type IN (
        'tunnel_credential_created.v0', 'tunnel_credential_updated.v0',
        'ssh_public_key_created.v0', 'ssh_public_key_updated.v0',
        'api_key_created.v0', 'api_key_updated.v0')
  AND NOT has(anomalies, 'owner_change_rejected')
  AND event_time_us < ?
ORDER BY v_credential_id, v_time_us, event_id
