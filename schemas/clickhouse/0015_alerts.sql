-- Alerts (`botmeter run --alert-rules`): one row per alert id and state change. An alert's id is
-- stable (a hash of its rule, owner, credential and the time of its episode's first evidence),
-- so every instance that evaluates the same rows computes the same id, and ReplacingMergeTree
-- keeps one row per id: the one with the highest `version` (microseconds of the write; a
-- delivery record is written with the version of the state it delivered + 1). Readers use FINAL.
-- `state` is 'firing' or 'resolved'; `delivered` says whether that state reached every sink.
-- Times are Unix seconds (`resolved_at` 0 while firing).
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id        String,
    rule            String,
    kind            String,
    state           String,
    owner_id        String,
    credential_id   String,
    events          UInt64,
    bytes           UInt64,
    first_seen      DateTime('UTC'),
    last_seen       DateTime('UTC'),
    last_ingested   DateTime('UTC'),
    fired_at        DateTime('UTC'),
    resolved_at     DateTime('UTC'),
    delivered       UInt8,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id
