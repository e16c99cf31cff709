-- The fleet's state, one row per credential, agent session, endpoint and credential with traffic,
-- which `/v1/fleet` reads (crates/query/sql/fleet_*.sql) instead of scanning the audit log's events
-- and the usage: on 100k credentials, reading the events took seconds; these tables hold a few
-- hundred thousand small rows.
--
-- Each is an AggregatingMergeTree of min / max / argMin / any states, fed by a materialized view on
-- every insert into `control_events_log` or `usage_events`. Those states are idempotent: a control
-- message stored twice (the log keeps copies until they merge), an insert the view sees again, or
-- the backfill below overlapping the view's first inserts change nothing. Readers `-Merge` and
-- `GROUP BY` the key (parts merge in the background). Every time is kept as a minimum or maximum of
-- event times, so an answer as of a past time is exact for the audit log (a session's start and
-- first stop, an endpoint's creation and first deletion, a credential's creation and first
-- deletion); the last traffic is the latest of all time, which the API uses only when it is
-- before the time asked about and otherwise reads from the raw rows. A `minIf` that never matched
-- reads 0. Statements are safe to repeat. Runs on ClickHouse 18.16 and current ClickHouse (no
-- SimpleAggregateFunction, no subquery in a view, aliases that differ from the columns they read).
CREATE TABLE IF NOT EXISTS fleet_credentials
(
    credential_id String,
    kind          AggregateFunction(any, String),
    owner         AggregateFunction(argMinIf, String, Int64, UInt8),
    created_us    AggregateFunction(min, Int64),
    deleted_us    AggregateFunction(minIf, Int64, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY credential_id
;
CREATE MATERIALIZED VIEW IF NOT EXISTS fleet_credentials_mv TO fleet_credentials AS
SELECT
    object_id                                                                            AS credential_id,
    anyState(if(startsWith(event_type, 'tunnel_credential_'), 'authtoken', 'ssh_key'))  AS kind,
    argMinIfState(owner_id, event_time_us,
                  toUInt8(NOT has(anomalies, 'owner_change_rejected') AND owner_id != '')) AS owner,
    minState(event_time_us)                                                              AS created_us,
    minIfState(event_time_us, toUInt8(endsWith(event_type, '_deleted.v0')))              AS deleted_us
FROM control_events_log
WHERE event_type IN (
    'tunnel_credential_created.v0', 'tunnel_credential_updated.v0', 'tunnel_credential_deleted.v0',
    'ssh_public_key_created.v0', 'ssh_public_key_updated.v0', 'ssh_public_key_deleted.v0')
GROUP BY credential_id
;
INSERT INTO fleet_credentials
SELECT
    object_id                                                                            AS credential_id,
    anyState(if(startsWith(event_type, 'tunnel_credential_'), 'authtoken', 'ssh_key'))  AS kind,
    argMinIfState(owner_id, event_time_us,
                  toUInt8(NOT has(anomalies, 'owner_change_rejected') AND owner_id != '')) AS owner,
    minState(event_time_us)                                                              AS created_us,
    minIfState(event_time_us, toUInt8(endsWith(event_type, '_deleted.v0')))              AS deleted_us
FROM control_events_log
WHERE event_type IN (
    'tunnel_credential_created.v0', 'tunnel_credential_updated.v0', 'tunnel_credential_deleted.v0',
    'ssh_public_key_created.v0', 'ssh_public_key_updated.v0', 'ssh_public_key_deleted.v0')
GROUP BY credential_id
;
CREATE TABLE IF NOT EXISTS fleet_sessions
(
    session_id String,
    credential AggregateFunction(anyIf, String, UInt8),
    start_us   AggregateFunction(minIf, Int64, UInt8),
    stop_us    AggregateFunction(minIf, Int64, UInt8),
    region     AggregateFunction(argMinIf, String, Int64, UInt8),
    os         AggregateFunction(argMinIf, String, Int64, UInt8),
    user_agent AggregateFunction(argMinIf, String, Int64, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY session_id
;
CREATE MATERIALIZED VIEW IF NOT EXISTS fleet_sessions_mv TO fleet_sessions AS
SELECT
    object_id                                                                       AS session_id,
    anyIfState(visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id'),
               toUInt8(visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id') != ''))                                               AS credential,
    minIfState(event_time_us, toUInt8(event_type = 'agent_session_start.v0'))                                              AS start_us,
    minIfState(event_time_us, toUInt8(event_type = 'agent_session_stop.v0'))        AS stop_us,
    argMinIfState(visitParamExtractString(object, 'region'), event_time_us, toUInt8(event_type = 'agent_session_start.v0'))     AS region,
    argMinIfState(visitParamExtractString(object, 'os'), event_time_us, toUInt8(event_type = 'agent_session_start.v0'))         AS os,
    argMinIfState(visitParamExtractString(object, 'user_agent'), event_time_us, toUInt8(event_type = 'agent_session_start.v0')) AS user_agent
FROM control_events_log
WHERE event_type IN ('agent_session_start.v0', 'agent_session_stop.v0')
GROUP BY session_id
;
INSERT INTO fleet_sessions
SELECT
    object_id                                                                       AS session_id,
    anyIfState(visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id'),
               toUInt8(visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id') != ''))                                               AS credential,
    minIfState(event_time_us, toUInt8(event_type = 'agent_session_start.v0'))                                              AS start_us,
    minIfState(event_time_us, toUInt8(event_type = 'agent_session_stop.v0'))        AS stop_us,
    argMinIfState(visitParamExtractString(object, 'region'), event_time_us, toUInt8(event_type = 'agent_session_start.v0'))     AS region,
    argMinIfState(visitParamExtractString(object, 'os'), event_time_us, toUInt8(event_type = 'agent_session_start.v0'))         AS os,
    argMinIfState(visitParamExtractString(object, 'user_agent'), event_time_us, toUInt8(event_type = 'agent_session_start.v0')) AS user_agent
FROM control_events_log
WHERE event_type IN ('agent_session_start.v0', 'agent_session_stop.v0')
GROUP BY session_id
;
CREATE TABLE IF NOT EXISTS fleet_endpoints
(
    endpoint_id String,
    session     AggregateFunction(anyIf, String, UInt8),
    created_us  AggregateFunction(minIf, Int64, UInt8),
    deleted_us  AggregateFunction(minIf, Int64, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY endpoint_id
;
CREATE MATERIALIZED VIEW IF NOT EXISTS fleet_endpoints_mv TO fleet_endpoints AS
SELECT
    object_id                                                                       AS endpoint_id,
    anyIfState(visitParamExtractString(visitParamExtractRaw(object, 'tunnel_session'), 'id'),
               toUInt8(visitParamExtractString(visitParamExtractRaw(object, 'tunnel_session'), 'id') != ''))                                               AS session,
    minIfState(event_time_us, toUInt8(event_type = 'endpoint_created.v0'))          AS created_us,
    minIfState(event_time_us, toUInt8(event_type = 'endpoint_deleted.v0'))          AS deleted_us
FROM control_events_log
WHERE event_type IN ('endpoint_created.v0', 'endpoint_deleted.v0')
GROUP BY endpoint_id
;
INSERT INTO fleet_endpoints
SELECT
    object_id                                                                       AS endpoint_id,
    anyIfState(visitParamExtractString(visitParamExtractRaw(object, 'tunnel_session'), 'id'),
               toUInt8(visitParamExtractString(visitParamExtractRaw(object, 'tunnel_session'), 'id') != ''))                                               AS session,
    minIfState(event_time_us, toUInt8(event_type = 'endpoint_created.v0'))          AS created_us,
    minIfState(event_time_us, toUInt8(event_type = 'endpoint_deleted.v0'))          AS deleted_us
FROM control_events_log
WHERE event_type IN ('endpoint_created.v0', 'endpoint_deleted.v0')
GROUP BY endpoint_id
;
CREATE TABLE IF NOT EXISTS fleet_traffic
(
    credential_id   String,
    last_traffic_us AggregateFunction(max, Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY credential_id
;
CREATE MATERIALIZED VIEW IF NOT EXISTS fleet_traffic_mv TO fleet_traffic AS
SELECT
    credential_id,
    maxState(event_time_us) AS last_traffic_us
FROM usage_events
WHERE status = 'attributed'
  AND credential_id != ''
  AND sign > 0
GROUP BY credential_id
;
INSERT INTO fleet_traffic
SELECT
    credential_id,
    maxState(event_time_us) AS last_traffic_us
FROM usage_events
WHERE status = 'attributed'
  AND credential_id != ''
  AND sign > 0
GROUP BY credential_id
