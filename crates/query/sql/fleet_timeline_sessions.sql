-- Every agent session of the fleet's timeline (crates/query/src/api/fleet/timeline.rs), whatever
-- the time, from the state table of migration 0013: its credential, first
-- agent_session_start.v0, first agent_session_stop.v0 (0 when none) and what the start event
-- carries about the agent (region, OS, user agent; empty when absent). A session with a stop and
-- no start is no session. Read verbatim by the HTTP API and by tests/python/test_fleet_chdb.py.
--
-- No placeholders. Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(session_id)         AS s_session_id,
    toString(session_credential) AS s_credential_id,
    toInt64(started)             AS s_start_us,
    toInt64(stopped)             AS s_stop_us,
    toString(agent_region)       AS s_region,
    toString(agent_os)           AS s_os,
    toString(agent_user_agent)   AS s_user_agent
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
       AND session_credential != ''
)
ORDER BY s_credential_id, s_session_id
