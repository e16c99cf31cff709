-- The agent sessions online at a time `at` (started before `at`, not stopped before `at`), from
-- the state tables of migration 0013: credential, start, and what the agent_session_start.v0
-- carries about the agent (region, OS, user agent; empty when absent), with the endpoints it
-- serves at `at` (an endpoint_created.v0 naming it as tunnel_session before `at`, no
-- endpoint_deleted.v0 before `at`). Read verbatim by the HTTP API
-- (crates/query/src/api/fleet.rs) and by tests/python/test_fleet_chdb.py.
--
-- Placeholders, in order: at (Int64, microseconds) four times.
-- Must run on ClickHouse 18.16 and current ClickHouse: one join, joined subqueries with aliases
-- (ANY LEFT: a session without endpoints is kept, with 0), aliases that differ from columns.
SELECT
    toString(session_id)         AS o_session_id,
    toString(session_credential) AS o_credential_id,
    toInt64(started)             AS o_start_us,
    toString(agent_region)       AS o_region,
    toString(agent_os)           AS o_os,
    toString(agent_user_agent)   AS o_user_agent,
    toUInt64(endpoints)          AS o_endpoints
FROM
(
    SELECT
        session_id,
        anyIfMerge(credential)    AS session_credential,
        minIfMerge(start_us)      AS started,
        minIfMerge(stop_us)       AS stopped,
        argMinIfMerge(region)     AS agent_region,
        argMinIfMerge(os)         AS agent_os,
        argMinIfMerge(user_agent) AS agent_user_agent
    FROM fleet_sessions
    GROUP BY session_id
    HAVING started > 0
       AND started < ?
       AND (stopped = 0 OR stopped >= ?)
       AND session_credential != ''
) AS online
ANY LEFT JOIN
(
    SELECT
        endpoint_session AS session_id,
        count()          AS endpoints
    FROM
    (
        SELECT
            endpoint_id,
            anyIfMerge(session)    AS endpoint_session,
            minIfMerge(created_us) AS created,
            minIfMerge(deleted_us) AS deleted
        FROM fleet_endpoints
        GROUP BY endpoint_id
    )
    WHERE created > 0
      AND created < ?
      AND (deleted = 0 OR deleted >= ?)
      AND endpoint_session != ''
    GROUP BY endpoint_session
) AS served USING session_id
ORDER BY o_credential_id, o_session_id
