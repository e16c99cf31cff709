-- The alerts an evaluation needs (crates/query/src/alerts/mod.rs): the newest version of every
-- alert id that is firing, undelivered, or resolved since a time (Unix seconds). Newest by
-- argMax over `version`, not FINAL, so that no filter can be applied before the versions are
-- collapsed.
-- Placeholders: resolved since.
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
HAVING s_state = 'firing' OR s_delivered = 0 OR s_resolved_at >= toDateTime(?)
ORDER BY s_alert_id
