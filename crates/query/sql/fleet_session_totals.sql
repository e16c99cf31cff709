-- Agent sessions per credential at a time `at`, from the audit log: how many had started before
-- `at`, the latest start and the latest stop before `at` (0 when none). A session starts at its
-- first agent_session_start.v0 and stops at its last agent_session_stop.v0 (event times, to the microsecond); a session with a stop and no start
-- is not counted. Read verbatim by the HTTP API (crates/query/src/api/fleet.rs) and by
-- tests/python/test_reports_chdb.py.
--
-- Placeholders: at (Int64, microseconds).
-- Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(credential_id)     AS t_credential_id,
    toUInt64(count())           AS t_sessions,
    toInt64(max(start_us))      AS t_last_start_us,
    toInt64(max(stop_us))       AS t_last_stop_us
FROM
(
    SELECT
        object_id                                                   AS session_id,
        anyIf(cred, cred != '')                                     AS credential_id,
        countIf(event_type = 'agent_session_start.v0')              AS starts,
        minIf(event_time_us, event_type = 'agent_session_start.v0') AS start_us,
        countIf(event_type = 'agent_session_stop.v0')               AS stops,
        maxIf(event_time_us, event_type = 'agent_session_stop.v0')  AS stop_us
    FROM
    (
        SELECT
            object_id,
            event_type,
            event_time_us,
            visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id') AS cred
        FROM control_events
        WHERE event_type IN ('agent_session_start.v0', 'agent_session_stop.v0')
          AND event_time_us < ?
    )
    GROUP BY session_id
)
WHERE starts > 0
  AND credential_id != ''
GROUP BY credential_id
ORDER BY t_credential_id
