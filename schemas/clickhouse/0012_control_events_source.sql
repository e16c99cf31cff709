-- Who made a control event when ngrok did not: the envelope's `source` (`botmeter-sync` for what
-- `botmeter sync` synthesized from the ngrok API: fleet snapshots, bot user and endpoint
-- lifecycle, differences between polls); empty for ngrok's own events, and for every row written
-- before this column existed (botmeter synthesized none then).
-- Every statement is safe to repeat: the column's "already exists" counts as applied (ClickHouse
-- 18.16 has no ADD COLUMN IF NOT EXISTS), and the view is dropped and created again with it.
ALTER TABLE control_events_log ADD COLUMN source String DEFAULT ''
;
DROP TABLE IF EXISTS control_events
;
CREATE VIEW IF NOT EXISTS control_events AS
SELECT event_id, event_type, event_time, event_time_us, account_id, principal_id, principal_subject,
       principal_credential_id, object_id, owner_id, object, kafka_topic, kafka_partition, kafka_offset,
       ingested_at, anomalies, source
FROM control_events_log FINAL
