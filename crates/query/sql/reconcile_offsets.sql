-- Every offset of one partition of one topic that botmeter stores in any table, ascending, each
-- once: what `botmeter reconcile` walks to name the gaps it has counted (only when it found some).
-- Placeholders, in order: the topic (String) and the partition (Int32), three times, once per table.
-- Read verbatim by the writer (include_str! in crates/query/src/writer.rs). Runs on ClickHouse 18.16.
SELECT toInt64(kafka_offset) AS stored_offset
FROM
(
    SELECT kafka_offset FROM usage_events WHERE kafka_topic = ? AND kafka_partition = ?
    UNION ALL
    SELECT kafka_offset FROM control_events WHERE kafka_topic = ? AND kafka_partition = ?
    UNION ALL
    SELECT kafka_offset FROM dead_letters WHERE kafka_topic = ? AND kafka_partition = ?
)
GROUP BY kafka_offset
ORDER BY kafka_offset
