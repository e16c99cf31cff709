-- The usage rows the alert rules read (`botmeter run --alert-rules`, crates/query/sql/alert_*.sql):
-- attributed rows with a flag (credential_deleted, acl_violation, owner_inactive, owner_deleted,
-- …) and unattributed rows, copied from every insert into `usage_events` by the materialized view
-- below, ordered by ingestion time. The rules are evaluated every second over the rows ingested in
-- the last `lookback_seconds`; on `usage_events` (partitioned by month, ordered by owner first)
-- each evaluation read the current month's partition in full. Here the primary key skips every
-- granule ingested before the lookback, and the partition key (month of event time) the months
-- before the evaluation's event-time bound. The table holds the flagged and unattributed rows
-- only: a small part of the usage.
--
-- Exact like the raw table: `sign` is copied, restated rows (`botmeter reattribute` inserts sign
-- -1/+1 pairs into `usage_events`) reach the view too, and the rules sum `sign`.
--
-- Rows written before the view existed: the backfill below copies those stamped within the last 61
-- days (twice the longest lookback: the rules' event-time bound) and ingested before the oldest
-- row the table holds (all of them when it is empty). Run again, it copies nothing (the table's
-- oldest row is then a copied one), and a row the view copied while the migration ran is not
-- copied twice; a row the pipeline inserted just before the view existed with an `ingested_at` at
-- or after the view's first row is not copied (stop the pipelines while migrating to avoid it).
-- Runs on ClickHouse 18.16 and current ClickHouse.
CREATE TABLE IF NOT EXISTS usage_alert_evidence
(
    event_time      DateTime('UTC'),
    ingested_at     DateTime('UTC'),
    status          String,
    flags           Array(String),
    owner_id        String,
    credential_id   String,
    bytes_in        UInt64,
    bytes_out       UInt64,
    sign            Int8,
    kafka_partition Int32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (ingested_at, owner_id, credential_id)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_alert_evidence_mv TO usage_alert_evidence AS
SELECT
    event_time,
    ingested_at,
    status,
    flags,
    owner_id,
    credential_id,
    bytes_in,
    bytes_out,
    sign,
    kafka_partition
FROM usage_events
WHERE status = 'unattributed' OR (status = 'attributed' AND notEmpty(flags))
;
INSERT INTO usage_alert_evidence
SELECT
    event_time,
    ingested_at,
    status,
    flags,
    owner_id,
    credential_id,
    bytes_in,
    bytes_out,
    sign,
    kafka_partition
FROM usage_events
WHERE (status = 'unattributed' OR (status = 'attributed' AND notEmpty(flags)))
  AND event_time >= now() - 5270400
  AND ingested_at < (SELECT if(count() = 0, toDateTime(4294967295, 'UTC'), min(ingested_at))
                     FROM usage_alert_evidence)
