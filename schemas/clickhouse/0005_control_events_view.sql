-- `control_events` becomes a view of the deduplicated audit log (0004): the name every report,
-- dashboard and investigation query reads keeps working, and shows one row per control message.
-- botmeter writes to `control_events_log`. The v1 table's rows were copied by 0004 (recorded before
-- this file runs), so it can go. Repeating this file drops and recreates the view: harmless.
DROP TABLE IF EXISTS control_events
;
CREATE VIEW IF NOT EXISTS control_events AS
SELECT event_id, event_type, event_time, event_time_us, account_id, principal_id, principal_subject,
       principal_credential_id, object_id, owner_id, object, kafka_topic, kafka_partition, kafka_offset,
       ingested_at, anomalies
FROM control_events_log FINAL
