-- The highest Kafka offset stored per partition of one topic, over every table that records one.
-- Placeholders, in order: the topic three times (String), one per table.
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
    FROM control_events WHERE kafka_topic = ? GROUP BY kafka_partition
    UNION ALL
    SELECT kafka_partition, max(kafka_offset) AS max_offset
    FROM dead_letters WHERE kafka_topic = ? GROUP BY kafka_partition
)
GROUP BY kafka_partition
ORDER BY kafka_partition
