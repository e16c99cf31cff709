-- Is the bill paying for traffic that should not have happened? Attributed usage carrying the
-- flags of interest (by default: credential_deleted, i.e. a revoked credential whose agent session
-- kept serving, and acl_violation, i.e. an endpoint its credential's bind rules do not allow), per
-- owner, credential and flag, with when the credential was revoked and its bind rules (ACL).
-- A row with two flags counts under each.
--
-- Parameters: the lines marked `-- param` in the WITH block below.
--   from_time     start of the span (inclusive, UTC)
--   to_time       end of the span (exclusive, UTC)
--   wanted_flags  the flags to list; the others are owner_inactive, owner_deleted and
--                 principal_mismatch
-- Columns: owner, credential, credential_kind, flag; events, data out and in (GB), HTTP requests,
--   TCP connections, endpoints, up to 5 hostnames, first and last traffic; revoked_at (its own
--   deletion or its owner's, whichever came first; empty when neither happened) and acl (the
--   credential's latest bind rules).
-- Run: clickhouse-client --database botmeter < queries/05_revoked_or_acl_violating_usage.sql
-- Runs on ClickHouse 18.16 and current ClickHouse. Every metric is summed times `sign`, every
-- count is sum(sign).
SELECT
    o                                   AS owner,
    credential,
    kind                                AS credential_kind,
    flag,
    events,
    round(out_b / 1e9, 3)               AS data_out_gb,
    round(in_b / 1e9, 3)                AS data_in_gb,
    reqs                                AS requests,
    conns                               AS tcp_conns,
    endpoints,
    hostnames,
    first_seen,
    last_seen,
    revoked_at,
    acl
FROM
(
    WITH
        toDateTime('2026-01-01 00:00:00', 'UTC')   AS from_time,    -- param: start (inclusive, UTC)
        toDateTime('2026-02-01 00:00:00', 'UTC')   AS to_time,      -- param: end (exclusive, UTC)
        ['credential_deleted', 'acl_violation']    AS wanted_flags  -- param: flags to list
    SELECT
        owner_id                                   AS o,
        credential_id                              AS credential,
        any(credential_kind)                       AS kind,
        flag,
        sum(sign)                                  AS events,
        sum(bytes_out * sign)                      AS out_b,
        sum(bytes_in * sign)                       AS in_b,
        sum(http_requests * sign)                  AS reqs,
        sum(tcp_connections * sign)                AS conns,
        uniqExact(endpoint_id)                     AS endpoints,
        arraySlice(groupUniqArray(hostname), 1, 5) AS hostnames,
        min(event_time)                            AS first_seen,
        max(event_time)                            AS last_seen
    FROM usage_events
    ARRAY JOIN flags AS flag
    WHERE status = 'attributed'
      AND has(wanted_flags, flag)
      AND event_time >= from_time
      AND event_time < to_time
    GROUP BY o, credential, flag
    HAVING events != 0
) AS flagged
ANY LEFT JOIN
(
    -- Every credential's revocation and latest bind rules, from the audit log (small). Deleting
    -- a bot user revokes its credentials: a credential is revoked at its own deletion or its
    -- owner's, whichever came first.
    SELECT
        credential,
        if(revoked_us = 0, '', toString(toDateTime(intDiv(revoked_us, 1000000), 'UTC'))) AS revoked_at,
        acl
    FROM
    (
        SELECT
            credential,
            acl,
            multiIf(owner_deleted_us = 0, own_deleted_us,
                    own_deleted_us = 0, owner_deleted_us,
                    least(own_deleted_us, owner_deleted_us))                   AS revoked_us
        FROM
        (
            SELECT
                object_id                                                      AS credential,
                argMinIf(owner_id, event_time_us, owner_id != '')              AS credential_owner,
                maxIf(event_time_us, endsWith(event_type, '_deleted.v0'))      AS own_deleted_us,
                argMaxIf(visitParamExtractRaw(object, 'acl'), event_time_us,
                         visitParamHas(object, 'acl'))                         AS acl
            FROM control_events
            WHERE (startsWith(event_type, 'tunnel_credential_')
                OR startsWith(event_type, 'ssh_public_key_')
                OR startsWith(event_type, 'api_key_'))
              -- Events that tried to change the credential's owner were ignored for attribution:
              -- here too.
              AND NOT has(anomalies, 'owner_change_rejected')
            GROUP BY credential
        ) AS own
        ANY LEFT JOIN
        (
            SELECT object_id AS credential_owner, min(event_time_us) AS owner_deleted_us
            FROM control_events
            WHERE event_type = 'bot_user_deleted.v0'
            GROUP BY credential_owner
        ) AS owner_deletions USING credential_owner
    )
) AS credentials USING credential
ORDER BY data_out_gb DESC, events DESC, owner, credential, flag;
