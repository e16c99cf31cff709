-- The highest Kafka offset stored per partition of one topic: where `botmeter run` resumes.
-- Placeholders, in order: the topic twice (String), one per table.
-- Only the tables written in the same insert as a batch's positions count: usage_events (every
-- traffic message, dead letters included, as one row) and the audit log, read from its table
-- `control_events_log` rather than the deduplicating view: copies of a message share its offset,
-- so the maximum is the same without FINAL. `dead_letters` is
-- written before them and idempotent (ReplacingMergeTree by position), so it must not move a
-- position: a crash between the two writes would otherwise skip the batch's other rows.
-- Read verbatim by the writer (include_str! in crates/query/src/writer.rs) and by
-- tests/python/test_migrations_chdb.py. Each inner query aggregates its table before the union, so
-- only one row per partition and table crosses it.
SELECT kafka_partition, max(max_offset) AS max_offset
FROM
(
    SELECT kafka_partition, max(kafka_offset) AS max_offset
    FROM usage_events WHERE kafka_topic = ? GROUP BY kafka_partition
    UNION ALL
    SELECT kafka_partition, max(kafka_offset) AS max_offset
    FROM control_events_log WHERE kafka_topic = ? GROUP BY kafka_partition
)
GROUP BY kafka_partition
ORDER BY kafka_partition
