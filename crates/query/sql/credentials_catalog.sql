-- Every credential of the audit log, one row each: kind, owner at creation (ownership never
-- changes; events flagged owner_change_rejected are ignored for it), latest description, first
-- event (created) and deletion time. Read verbatim by the HTTP API
-- (crates/query/src/api/catalog.rs) and by tests/python/test_reports_chdb.py.
--
-- Tenancy is by ownership: a customer's credentials are those its bot users own (the API lists
-- them by owner), never those whose metadata names it, so no metadata is read here.
-- Deleting a bot user revokes its credentials (ngrok's behaviour): a credential whose owner was
-- deleted before any deletion of its own is deleted as of the owner's deletion
-- (c_revoked_with_owner = 1, c_revoking_event_id the bot_user_deleted.v0 event), whether or not
-- a deletion event of the credential follows.
-- Placeholders, in order: all (UInt8: 1 for every credential), owner ids (Array(String)),
-- credential ids (Array(String)). A credential is listed when all is 1, or its owner or its id is
-- listed.
-- Must run on ClickHouse 18.16: no JSONExtract (visitParamExtract* on compact JSON instead).
SELECT
    toString(credential_id)                                         AS c_credential_id,
    toString(kind)                                                  AS c_kind,
    toString(owner)                                                 AS c_owner_id,
    toString(description)                                           AS c_description,
    toInt64(created_us)                                             AS c_created_us,
    toInt64(if(revoked_with_owner, owner_deleted_us, deleted_us))   AS c_deleted_us,
    toUInt8(revoked_with_owner)                                     AS c_revoked_with_owner,
    toString(if(revoked_with_owner, owner_deleted_event, ''))       AS c_revoking_event_id
FROM
(
    SELECT
        credential_id,
        kind,
        owner,
        description,
        created_us,
        deleted_us,
        owner_deleted_us,
        owner_deleted_event,
        owner_deleted_us > 0 AND (deleted_us = 0 OR owner_deleted_us < deleted_us) AS revoked_with_owner
    FROM
    (
        SELECT
            object_id AS credential_id,
            any(multiIf(startsWith(event_type, 'tunnel_credential_'), 'authtoken',
                        startsWith(event_type, 'ssh_public_key_'), 'ssh_key', 'api_key')) AS kind,
            argMinIf(owner_id, event_time_us, accepted AND owner_id != '')                 AS owner,
            argMaxIf(visitParamExtractString(object, 'description'), event_time_us, accepted) AS description,
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
        )
        GROUP BY credential_id
    ) AS credentials
    ANY LEFT JOIN
    (
        SELECT
            object_id                      AS owner,
            min(event_time_us)             AS owner_deleted_us,
            argMin(event_id, event_time_us) AS owner_deleted_event
        FROM control_events
        WHERE event_type = 'bot_user_deleted.v0'
        GROUP BY owner
    ) AS owner_deletions USING owner
)
WHERE ? = 1
   OR owner IN (SELECT arrayJoin(CAST(? AS Array(String))))
   OR credential_id IN (SELECT arrayJoin(CAST(? AS Array(String))))
ORDER BY c_credential_id
