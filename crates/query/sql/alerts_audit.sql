-- Alerts in an audit trail (`GET /v1/audit`, crates/query/src/api/audit.rs): the newest version
-- (argMax over `version`) of each alert of one of a set of owners or of credentials that fired or
-- resolved in [from, to), oldest firing first, at most `limit`. An alert's owner and credential
-- never change, so they are filtered before the versions are collapsed.
-- Placeholders, in order: owners (Array(String)), credentials (Array(String)), from, to, from, to
-- (Unix seconds), limit.
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
WHERE owner_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
   OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
GROUP BY s_alert_id
HAVING (s_fired_at >= toDateTime(?) AND s_fired_at < toDateTime(?))
    OR (s_state = 'resolved' AND s_resolved_at >= toDateTime(?) AND s_resolved_at < toDateTime(?))
ORDER BY s_fired_at, s_alert_id
LIMIT ?
