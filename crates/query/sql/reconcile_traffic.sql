-- Reconciliation of one traffic topic, per partition: the Kafka positions botmeter stores and what
-- their rows net to. A traffic message must end in exactly one net row of usage_events: sum(sign)
-- over its position is 1 (a restatement adds a -1 copy and a +1 row at the same position). A
-- traffic dead letter also has a dead_letters row (ReplacingMergeTree, so possibly twice before a
-- merge); that row makes the position stored but adds no net row, so a position held only by
-- dead_letters nets to 0 and is reported. A repeated delivery of an event (status `duplicate`) is a
-- message of its own: its position nets to one row, counted under `window_repeated`.
-- Placeholders, in order: the window start and end (Unix seconds, Int64, start inclusive and end
-- exclusive) of the outcome counts, then the topic twice (String), once per table. Duplicate and
-- lost positions are counted over every row, whatever the window.
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
    toInt64(sum(position_attributed))                  AS window_attributed,
    toInt64(sum(position_unattributed))                AS window_unattributed,
    toInt64(0)                                         AS window_control_events,
    toInt64(sum(position_dead_letter))                 AS window_dead_letters,
    toInt64(sum(position_repeated))                    AS window_repeated
FROM
(
    SELECT
        toInt32(kafka_partition)                                  AS partition_id,
        toInt64(kafka_offset)                                     AS at_offset,
        sum(row_net)                                              AS position_net,
        sum(row_net * row_in_window * (row_status = 'attributed'))   AS position_attributed,
        sum(row_net * row_in_window * (row_status = 'unattributed')) AS position_unattributed,
        sum(row_net * row_in_window * (row_status = 'dead_letter'))  AS position_dead_letter,
        sum(row_net * row_in_window * (row_status = 'duplicate'))    AS position_repeated
    FROM
    (
        SELECT
            kafka_partition,
            kafka_offset,
            toInt64(sign)                                                          AS row_net,
            status                                                                 AS row_status,
            toInt64(toUInt32(event_time) >= ? AND toUInt32(event_time) < ?)        AS row_in_window
        FROM usage_events WHERE kafka_topic = ?
        UNION ALL
        SELECT kafka_partition, kafka_offset, toInt64(0), '', toInt64(0)
        FROM dead_letters WHERE kafka_topic = ?
    )
    GROUP BY kafka_partition, kafka_offset
)
GROUP BY partition_id
ORDER BY partition_id
