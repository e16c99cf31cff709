-- The agent sessions online at a time `at` (started before `at`, no stop before `at`), from the
-- audit log: credential, start, and what the agent_session_start.v0 carries about the agent
-- (region, OS, user agent; empty when absent), with the endpoints it serves at `at`
-- (endpoint_created.v0 naming it as tunnel_session before `at`, no endpoint_deleted.v0 before
-- `at`). Read verbatim by the HTTP API (crates/query/src/api/fleet.rs) and by
-- tests/python/test_reports_chdb.py.
--
-- Placeholders, in order: at (Int64, microseconds) twice.
-- Must run on ClickHouse 18.16 and current ClickHouse: visitParamExtract* (no JSONExtract) on
-- the compact JSON of the object, one join, joined subqueries with aliases (ANY LEFT: a session
-- without endpoints is kept, with 0).
SELECT
    toString(session_id)    AS o_session_id,
    toString(credential_id) AS o_credential_id,
    toInt64(start_us)       AS o_start_us,
    toString(region)        AS o_region,
    toString(os)            AS o_os,
    toString(user_agent)    AS o_user_agent,
    toUInt64(endpoints)     AS o_endpoints
FROM
(
    SELECT
        object_id                                         AS session_id,
        anyIf(cred, cred != '')                           AS credential_id,
        countIf(is_start)                                 AS starts,
        minIf(event_time_us, is_start)                    AS start_us,
        countIf(NOT is_start)                             AS stops,
        argMinIf(session_region, event_time_us, is_start) AS region,
        argMinIf(session_os, event_time_us, is_start)     AS os,
        argMinIf(session_agent, event_time_us, is_start)  AS user_agent
    FROM
    (
        SELECT
            object_id,
            event_time_us,
            event_type = 'agent_session_start.v0'                                     AS is_start,
            visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id') AS cred,
            visitParamExtractString(object, 'region')                                 AS session_region,
            visitParamExtractString(object, 'os')                                     AS session_os,
            visitParamExtractString(object, 'user_agent')                             AS session_agent
        FROM control_events
        WHERE event_type IN ('agent_session_start.v0', 'agent_session_stop.v0')
          AND event_time_us < ?
    )
    GROUP BY session_id
    HAVING starts > 0 AND stops = 0 AND credential_id != ''
) AS online
ANY LEFT JOIN
(
    SELECT
        session_id,
        count() AS endpoints
    FROM
    (
        SELECT
            object_id                                           AS endpoint_id,
            anyIf(endpoint_session, endpoint_session != '')     AS session_id,
            countIf(event_type = 'endpoint_created.v0')         AS creations,
            countIf(event_type = 'endpoint_deleted.v0')         AS deletions
        FROM
        (
            SELECT
                object_id,
                event_type,
                visitParamExtractString(visitParamExtractRaw(object, 'tunnel_session'), 'id') AS endpoint_session
            FROM control_events
            WHERE event_type IN ('endpoint_created.v0', 'endpoint_deleted.v0')
              AND event_time_us < ?
        )
        GROUP BY endpoint_id
    )
    WHERE creations > 0
      AND deletions = 0
      AND session_id != ''
    GROUP BY session_id
) AS served USING session_id
ORDER BY o_credential_id, o_session_id
