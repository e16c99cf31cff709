-- Reconciliation of one control topic, per partition: the Kafka positions botmeter stores and what
-- their rows net to. A control message must end in exactly one row: a control_events row, or, when
-- it could not be decoded, a dead_letters row (ReplacingMergeTree keyed by position, so a dead
-- letter written twice counts once: max, not sum). control_events has no sign column.
-- Placeholders, in order: the window start and end (Unix seconds, Int64, start inclusive and end
-- exclusive) of the outcome counts, the topic (String), the window again, the topic again. Control
-- events count by event_time; dead letters, which have no readable event time, by received_at.
-- Duplicate and lost positions are counted over every row, whatever the window.
-- Read verbatim by the writer (include_str! in crates/query/src/writer.rs). Runs on ClickHouse 18.16:
-- aliases differ from column names, and every result column is cast to the type the reader expects.
SELECT
    partition_id,
    toUInt64(count())                                  AS stored_positions,
    toInt64(min(at_offset))                             AS min_offset,
    toInt64(max(at_offset))                             AS max_offset,
    toUInt64(countIf(position_net > 1))                AS duplicate_positions,
    toUInt64(countIf(position_net < 1))                AS lost_positions,
    arraySort(groupArrayIf(20)((at_offset, position_net), position_net != 1)) AS bad_sample,
    toInt64(0)                                         AS window_attributed,
    toInt64(0)                                         AS window_unattributed,
    toInt64(sum(position_control))                     AS window_control_events,
    toInt64(sum(position_dead_letter))                 AS window_dead_letters,
    toInt64(0)                                         AS window_repeated
FROM
(
    SELECT
        toInt32(kafka_partition)                       AS partition_id,
        toInt64(kafka_offset)                          AS at_offset,
        sum(row_control) + max(row_dead_letter)        AS position_net,
        sum(row_control * row_in_window)               AS position_control,
        max(row_dead_letter * row_in_window)           AS position_dead_letter
    FROM
    (
        SELECT
            kafka_partition,
            kafka_offset,
            toInt64(1)                                                         AS row_control,
            toInt64(0)                                                         AS row_dead_letter,
            toInt64(toUInt32(event_time) >= ? AND toUInt32(event_time) < ?)    AS row_in_window
        FROM control_events WHERE kafka_topic = ?
        UNION ALL
        SELECT
            kafka_partition,
            kafka_offset,
            toInt64(0),
            toInt64(1),
            toInt64(toUInt32(received_at) >= ? AND toUInt32(received_at) < ?)
        FROM dead_letters WHERE kafka_topic = ?
    )
    GROUP BY kafka_partition, kafka_offset
)
GROUP BY partition_id
ORDER BY partition_id
