-- The fleet's credentials at a time `at`: every authtoken and SSH key (the credentials an agent
-- starts a session with; API keys never do) created before `at` and live at `at` (neither it nor
-- its bot user deleted before `at`: deleting a bot user revokes its credentials), its kind, owner
-- (at creation; events flagged owner_change_rejected are ignored), creation, and its last
-- traffic: the latest usage time before `at` of an attributed usage event of it whose rows still
-- net to a positive sign (an event restated away, its sign -1 copy, is no traffic of it; only the
-- few events that have a -1 row are netted, so the common case is one max over the rows).
-- Read verbatim by the HTTP API (crates/query/src/api/fleet.rs) and by
-- tests/python/test_reports_chdb.py.
--
-- Placeholders, in order: at (Int64, microseconds) twice, all (UInt8: 1 for every owner), owner
-- ids (Array(String)), at (UInt32, Unix seconds), all, owner ids.
-- Must run on ClickHouse 18.16 and current ClickHouse: one join per SELECT, joined subqueries
-- with aliases, aliases that differ from column names, every result column cast to the type the
-- Rust row reads.
SELECT
    toString(credential_id)   AS f_credential_id,
    toString(kind)            AS f_kind,
    toString(owner)           AS f_owner_id,
    toInt64(created_us)       AS f_created_us,
    toInt64(last_traffic_us)  AS f_last_traffic_us
FROM
(
    SELECT credential_id, kind, owner, created_us
    FROM
    (
        SELECT
            object_id                                                      AS credential_id,
            any(if(startsWith(event_type, 'tunnel_credential_'), 'authtoken', 'ssh_key')) AS kind,
            argMinIf(owner_id, event_time_us, accepted AND owner_id != '') AS owner,
            min(event_time_us)                                             AS created_us,
            countIf(endsWith(event_type, '_deleted.v0'))                   AS deletions
        FROM
        (
            SELECT
                object_id,
                event_type,
                event_time_us,
                owner_id,
                NOT has(anomalies, 'owner_change_rejected') AS accepted
            FROM control_events
            WHERE event_type IN (
                    'tunnel_credential_created.v0', 'tunnel_credential_updated.v0', 'tunnel_credential_deleted.v0',
                    'ssh_public_key_created.v0', 'ssh_public_key_updated.v0', 'ssh_public_key_deleted.v0')
              AND event_time_us < ?
        )
        GROUP BY credential_id
    ) AS credentials
    ANY LEFT JOIN
    (
        SELECT
            object_id AS owner,
            count()   AS owner_deletions
        FROM control_events
        WHERE event_type = 'bot_user_deleted.v0'
          AND event_time_us < ?
        GROUP BY owner
    ) AS owner_deletions USING owner
    WHERE deletions = 0
      AND owner_deletions = 0
      AND owner != ''
      AND (? = 1 OR owner IN (SELECT arrayJoin(CAST(? AS Array(String)))))
) AS live
ANY LEFT JOIN
(
    SELECT
        credential_id,
        max(event_time_us) AS last_traffic_us
    FROM usage_events
    WHERE status = 'attributed'
      AND credential_id != ''
      AND sign > 0
      AND event_time < toDateTime(?)
      AND (? = 1 OR owner_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
      AND (credential_id, event_id) NOT IN
      (
          SELECT credential_id, event_id
          FROM usage_events
          WHERE (credential_id, event_id) IN
              (SELECT credential_id, event_id FROM usage_events WHERE sign < 0 AND status = 'attributed')
            AND status = 'attributed'
          GROUP BY credential_id, event_id
          HAVING sum(sign) <= 0
      )
    GROUP BY credential_id
) AS traffic USING credential_id
ORDER BY f_owner_id, f_credential_id
