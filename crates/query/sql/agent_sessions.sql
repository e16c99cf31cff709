-- Agent sessions, from the audit log, with the credential that authenticated them and that
-- credential's owner: one row per session that had started before `to` and had not stopped by
-- `from`. Read verbatim by the HTTP API (include_str! in crates/query/src/api/report.rs) and by
-- tests/python/test_reports_chdb.py.
--
-- A session starts at its first agent_session_start.v0 event and stops at its last
-- agent_session_stop.v0 event (event times, to the microsecond); a stop without a start keeps the
-- object's started_at for the API to parse. Events at or after `to` are ignored, so a session
-- stopped later is still open at `to`. The credential's owner is its owner at creation: ownership
-- never changes, and an event that tried to change it (anomaly owner_change_rejected) is ignored.
--
-- Placeholders, in order: to (Unix seconds), all (UInt8: 1 for every owner), owner ids
-- (Array(String)), credential ids (Array(String)), from (microseconds). A session counts when all
-- is 1, or its credential's owner or its credential is listed.
-- Must run on ClickHouse 18.16 and current ClickHouse: joined subqueries have aliases (current
-- ClickHouse requires them), and the join is ANY LEFT (current ClickHouse's ANY INNER keeps one left
-- row per key, which would drop all but one session of a credential).
SELECT
    toString(session_id)    AS s_session_id,
    toString(credential_id) AS s_credential_id,
    toString(cred_owner)    AS s_owner_id,
    toUInt64(starts)        AS s_starts,
    toInt64(start_us)       AS s_start_us,
    toUInt64(stops)         AS s_stops,
    toInt64(stop_us)        AS s_stop_us,
    toString(started_at)    AS s_started_at
FROM
(
    SELECT
        object_id                                                    AS session_id,
        anyIf(cred, cred != '')                                      AS credential_id,
        countIf(event_type = 'agent_session_start.v0')               AS starts,
        minIf(event_time_us, event_type = 'agent_session_start.v0')  AS start_us,
        countIf(event_type = 'agent_session_stop.v0')                AS stops,
        maxIf(event_time_us, event_type = 'agent_session_stop.v0')   AS stop_us,
        anyIf(started, started != '')                                AS started_at
    FROM
    (
        SELECT
            object_id,
            event_type,
            event_time_us,
            visitParamExtractString(visitParamExtractRaw(object, 'credential'), 'id') AS cred,
            visitParamExtractString(object, 'started_at')                             AS started
        FROM control_events
        WHERE event_type IN ('agent_session_start.v0', 'agent_session_stop.v0')
          AND event_time < toDateTime(?)
    )
    GROUP BY session_id
) AS sessions
ANY LEFT JOIN
(
    SELECT
        object_id                         AS credential_id,
        argMin(owner_id, event_time_us)   AS cred_owner
    FROM control_events
    WHERE event_type IN (
            'tunnel_credential_created.v0', 'tunnel_credential_updated.v0', 'tunnel_credential_deleted.v0',
            'ssh_public_key_created.v0', 'ssh_public_key_updated.v0', 'ssh_public_key_deleted.v0',
            'api_key_created.v0', 'api_key_updated.v0', 'api_key_deleted.v0')
      AND owner_id != ''
      AND NOT has(anomalies, 'owner_change_rejected')
    GROUP BY credential_id
) AS owners
USING credential_id
WHERE cred_owner != ''
  AND (? = 1
       OR cred_owner IN (SELECT arrayJoin(CAST(? AS Array(String))))
       OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
  AND (stops = 0 OR stop_us > ?)
ORDER BY s_session_id
