-- The audit log, deduplicated by Kafka position. Every botmeter instance reads the whole control
-- topic (the control plane is broadcast), and any of them may write a control event it consumed:
-- with several instances, or after a retried insert whose response was lost, the same message can
-- be stored more than once. `control_events_log` is a ReplacingMergeTree whose sorting key ends in
-- the message's position, so copies of one message (identical but for `ingested_at`) share a key
-- and collapse; the view `control_events` (next migration) reads it with FINAL, so every reader
-- sees each control message exactly once, merged or not.
-- Statements are safe to repeat: the copy below may run twice (a crash before this file is
-- recorded, or two instances migrating together) and its copies collapse the same way.
CREATE TABLE IF NOT EXISTS control_events_log
(
    event_id                String,
    event_type              String,
    event_time              DateTime('UTC'),
    event_time_us           Int64,
    account_id              String,
    principal_id            String,
    principal_subject       String,
    principal_credential_id String,
    object_id               String,
    owner_id                String,
    object                  String,
    kafka_topic             String,
    kafka_partition         Int32,
    kafka_offset            Int64,
    ingested_at             DateTime('UTC'),
    anomalies               Array(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_time, event_id, kafka_topic, kafka_partition, kafka_offset)
;
-- What schema v1 stored in the `control_events` table moves into the log.
INSERT INTO control_events_log
    (event_id, event_type, event_time, event_time_us, account_id, principal_id, principal_subject,
     principal_credential_id, object_id, owner_id, object, kafka_topic, kafka_partition, kafka_offset,
     ingested_at, anomalies)
SELECT event_id, event_type, event_time, event_time_us, account_id, principal_id, principal_subject,
       principal_credential_id, object_id, owner_id, object, kafka_topic, kafka_partition, kafka_offset,
       ingested_at, anomalies
FROM control_events
