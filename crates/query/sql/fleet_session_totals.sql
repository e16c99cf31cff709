-- Agent sessions per credential at a time `at`, from the state table of migration 0013: how many
-- had started before `at`, the latest start, and the latest stop before `at` (0 when none). A
-- session starts at its first agent_session_start.v0 and stops at its first
-- agent_session_stop.v0 (event times, to the microsecond); a session with a stop and no start is
-- not counted. Read verbatim by the HTTP API (crates/query/src/api/fleet.rs) and by
-- tests/python/test_fleet_chdb.py.
--
-- Placeholders, in order: at (Int64, microseconds) twice.
-- Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(session_credential)                   AS t_credential_id,
    toUInt64(count())                              AS t_sessions,
    toInt64(max(started))                          AS t_last_start_us,
    toInt64(max(if(stopped < ?, stopped, 0)))      AS t_last_stop_us
FROM
(
    SELECT
        session_id,
        anyIfMerge(credential) AS session_credential,
        minIfMerge(start_us)   AS started,
        minIfMerge(stop_us)    AS stopped
    FROM fleet_sessions
    GROUP BY session_id
)
WHERE started > 0
  AND started < ?
  AND session_credential != ''
GROUP BY session_credential
ORDER BY t_credential_id
