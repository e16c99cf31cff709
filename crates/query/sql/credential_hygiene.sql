-- Every credential as the audit log and the usage knew it at a time `at`, one row each, for the
-- credential hygiene report: kind, owner (at creation; events flagged owner_change_rejected are
-- ignored), the JSON object of its latest created or updated event before `at` (description,
-- metadata and ACL are read from it in Rust, at its top level), creation, deletion before `at`
-- (its own, or its owner's when that came first: deleting a bot user revokes its credentials, as
-- in credentials_catalog.sql), and from the attributed usage before `at`: its last use, and the
-- net number of rows flagged acl_violation and owner_inactive. Read verbatim by the HTTP API
-- (crates/query/src/api/hygiene.rs) and by tests/python/test_reports_chdb.py.
--
-- Usage is netted per event before the last use is taken: a row restated away (its sign -1 copy)
-- is no use, so the last use is the latest event whose rows still sum to a positive sign.
-- Placeholders, in order: at (Int64, microseconds) twice, all (UInt8: 1 for every owner), owner
-- ids (Array(String)), at (UInt32, Unix seconds), all, owner ids. Credentials are listed when all is 1
-- or their owner is listed.
-- Must run on ClickHouse 18.16: no JSONExtract, no IN of an array literal, aliases differ from
-- column names, every result column cast to the type the Rust row reads.
SELECT
    toString(credential_id)                                         AS h_credential_id,
    toString(kind)                                                  AS h_kind,
    toString(owner)                                                 AS h_owner_id,
    toString(latest_object)                                         AS h_object,
    toInt64(created_us)                                             AS h_created_us,
    toInt64(if(revoked_with_owner, owner_deleted_us, deleted_us))   AS h_deleted_us,
    toUInt8(revoked_with_owner)                                     AS h_revoked_with_owner,
    toInt64(last_used_us)                                           AS h_last_used_us,
    toInt64(acl_violation_rows)                                     AS h_acl_violations,
    toInt64(owner_inactive_rows)                                    AS h_owner_inactive
FROM
(
    SELECT
        credential_id,
        kind,
        owner,
        latest_object,
        created_us,
        deleted_us,
        owner_deleted_us,
        owner_deleted_us > 0 AND (deleted_us = 0 OR owner_deleted_us < deleted_us) AS revoked_with_owner
    FROM
    (
        SELECT
            object_id AS credential_id,
            any(multiIf(startsWith(event_type, 'tunnel_credential_'), 'authtoken',
                        startsWith(event_type, 'ssh_public_key_'), 'ssh_key', 'api_key')) AS kind,
            argMinIf(owner_id, event_time_us, accepted AND owner_id != '')                 AS owner,
            argMaxIf(object, event_time_us, accepted AND NOT endsWith(event_type, '_deleted.v0')) AS latest_object,
            min(event_time_us)                                                              AS created_us,
            maxIf(event_time_us, endsWith(event_type, '_deleted.v0'))                       AS deleted_us
        FROM
        (
            SELECT
                object_id,
                event_type,
                event_time_us,
                owner_id,
                object,
                NOT has(anomalies, 'owner_change_rejected') AS accepted
            FROM control_events
            WHERE event_type IN (
                    'tunnel_credential_created.v0', 'tunnel_credential_updated.v0', 'tunnel_credential_deleted.v0',
                    'ssh_public_key_created.v0', 'ssh_public_key_updated.v0', 'ssh_public_key_deleted.v0',
                    'api_key_created.v0', 'api_key_updated.v0', 'api_key_deleted.v0')
              AND event_time_us < ?
        )
        GROUP BY credential_id
    ) AS credentials
    ANY LEFT JOIN
    (
        SELECT
            object_id          AS owner,
            min(event_time_us) AS owner_deleted_us
        FROM control_events
        WHERE event_type = 'bot_user_deleted.v0'
          AND event_time_us < ?
        GROUP BY owner
    ) AS owner_deletions USING owner
    WHERE ? = 1
       OR owner IN (SELECT arrayJoin(CAST(? AS Array(String))))
) AS catalog
ANY LEFT JOIN
(
    SELECT
        credential_id,
        maxIf(used_us, net_rows > 0)  AS last_used_us,
        sum(acl_net)                  AS acl_violation_rows,
        sum(inactive_net)             AS owner_inactive_rows
    FROM
    (
        SELECT
            credential_id,
            event_id,
            max(event_time_us)                              AS used_us,
            sum(sign)                                       AS net_rows,
            sum(if(has(flags, 'acl_violation'), sign, 0))   AS acl_net,
            sum(if(has(flags, 'owner_inactive'), sign, 0))  AS inactive_net
        FROM usage_events
        WHERE status = 'attributed'
          AND credential_id != ''
          AND event_time < toDateTime(?)
          AND (? = 1 OR owner_id IN (SELECT arrayJoin(CAST(? AS Array(String)))))
        GROUP BY credential_id, event_id
    )
    GROUP BY credential_id
) AS used USING credential_id
ORDER BY h_credential_id
