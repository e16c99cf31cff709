-- Evidence of a flag alert rule (crates/query/src/alerts/mod.rs): attributed usage carrying either
-- of two flags, per owner and credential, among the rows ingested since a time and stamped after
-- an event time, read from `usage_alert_evidence` (migration 0016: the flagged and unattributed
-- usage rows, ordered by ingestion time, so that only the lookback's granules are read). `a_events` is the net row count, bytes are in + out, times are Unix seconds.
-- Placeholders, in order: flag, flag (the same twice for one flag), ingested since, event time
-- after (both Unix seconds), owner_id ('' for all), owner_id again, credential_id ('' for all),
-- credential_id again.
SELECT
    owner_id                                         AS a_owner_id,
    credential_id                                    AS a_credential_id,
    toInt64(sum(sign))                               AS a_events,
    toInt64(sum((bytes_in + bytes_out) * sign))      AS a_bytes,
    toUInt32(min(event_time))                        AS a_first_seen,
    toUInt32(max(event_time))                        AS a_last_seen,
    toUInt32(max(ingested_at))                       AS a_last_ingested
FROM usage_alert_evidence
WHERE status = 'attributed'
  AND (has(flags, ?) OR has(flags, ?))
  AND ingested_at >= toDateTime(?)
  AND event_time > toDateTime(?)
  AND (owner_id = ? OR ? = '')
  AND (credential_id = ? OR ? = '')
GROUP BY a_owner_id, a_credential_id
HAVING a_events > 0
ORDER BY a_owner_id, a_credential_id
