-- Alerts for `GET /v1/alerts` (crates/query/src/api/alerts.rs): the newest version (argMax over
-- `version`) of each id whose episode overlaps [from, to) (fired before `to`, and firing or
-- resolved at or after `from`), optionally in one state and for one alert id, oldest first.
-- Placeholders, in order: to, from (Unix seconds), state ('' for any), state, alert_id ('' for
-- any), alert_id, limit.
SELECT
    alert_id                           AS s_alert_id,
    argMax(rule, version)              AS s_rule,
    argMax(kind, version)              AS s_kind,
    argMax(state, version)             AS s_state,
    argMax(owner_id, version)          AS s_owner_id,
    argMax(credential_id, version)     AS s_credential_id,
    argMax(events, version)            AS s_events,
    argMax(bytes, version)             AS s_bytes,
    argMax(first_seen, version)        AS s_first_seen,
    argMax(last_seen, version)         AS s_last_seen,
    argMax(last_ingested, version)     AS s_last_ingested,
    argMax(fired_at, version)          AS s_fired_at,
    argMax(resolved_at, version)       AS s_resolved_at,
    argMax(delivered, version)         AS s_delivered,
    max(version)                       AS s_version
FROM alerts
GROUP BY s_alert_id
HAVING s_fired_at < toDateTime(?)
   AND (s_state = 'firing' OR s_resolved_at >= toDateTime(?))
   AND (s_state = ? OR ? = '')
   AND (s_alert_id = ? OR ? = '')
ORDER BY s_fired_at, s_alert_id
LIMIT ?
