-- botmeter schema v1: attributed usage, the control-plane audit log, dead letters.
-- Runs on ClickHouse 18.16 and on current ClickHouse: no TTL, no DateTime64, no LowCardinality here.
-- Times: `*_time` columns are DateTime('UTC') for partitioning and bucketing; `*_time_us` keep the
-- exact microsecond used by the as-of join. `usage_events` also holds one row per dead letter
-- (status 'dead_letter'), written in the same insert as the batch's other rows, so that the stored
-- Kafka positions cover every message; `dead_letters` (written first, idempotent by position)
-- keeps the original bytes and the reason. Statements are separated by lines holding only `;`.

CREATE TABLE IF NOT EXISTS usage_events
(
    event_id            String,
    event_type          String,
    event_time          DateTime('UTC'),
    event_time_us       Int64,
    account_id          String,
    status              String,
    unattributed_reason String,
    flags               Array(String),
    owner_id            String,
    owner_kind          String,
    credential_id       String,
    credential_kind     String,
    session_id          String,
    endpoint_id         String,
    hostname            String,
    port                UInt16,
    bytes_in            UInt64,
    bytes_out           UInt64,
    http_requests       UInt32,
    tcp_connections     UInt32,
    status_code         UInt16,
    request_body_bytes  UInt64,
    response_body_bytes UInt64,
    kafka_topic         String,
    kafka_partition     Int32,
    kafka_offset        Int64,
    ingested_at         DateTime('UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (owner_id, event_time, event_id)
;
CREATE TABLE IF NOT EXISTS control_events
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
    ingested_at             DateTime('UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_time, event_id)
;
CREATE TABLE IF NOT EXISTS dead_letters
(
    kafka_topic     String,
    kafka_partition Int32,
    kafka_offset    Int64,
    reason_kind     String,
    reason          String,
    payload         String,
    payload_bytes   UInt64,
    received_at     DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
