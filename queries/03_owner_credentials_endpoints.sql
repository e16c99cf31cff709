-- Within one bot (or user): which credentials and which endpoints carried the traffic? One row per
-- credential and endpoint, largest data out first, with the endpoint's address, its active endpoint
-- hours (how ngrok bills endpoints) and the anomaly flags seen on its traffic. A credential whose
-- agent sessions served several endpoints has several rows.
--
-- Parameters: the lines marked `-- param` in the WITH block below.
--   wanted_owner  the owner (`bot_…` or `usr_…`; 02_top_owners_month.sql lists them)
--   from_time     start of the span (inclusive, UTC)
--   to_time       end of the span (exclusive, UTC)
-- Columns: credential, credential_kind, endpoint, hostname, port; data out and in (GB), HTTP
--   requests, TCP connections, active endpoint hours, first and last traffic, flags seen.
-- Run: clickhouse-client --database botmeter < queries/03_owner_credentials_endpoints.sql
-- Runs on ClickHouse 18.16 and current ClickHouse. Every metric is summed times `sign`.
SELECT
    cred                            AS credential,
    any(cred_kind)                  AS credential_kind,
    ep                              AS endpoint,
    any(host)                       AS hostname,
    any(p)                          AS port,
    round(sum(out_b) / 1e9, 3)      AS data_out_gb,
    round(sum(in_b) / 1e9, 3)       AS data_in_gb,
    sum(reqs)                       AS requests,
    sum(conns)                      AS tcp_conns,
    countIf(out_b > 0)              AS endpoint_hours,
    min(first_t)                    AS first_seen,
    max(last_t)                     AS last_seen,
    groupUniqArrayArray(flags_seen) AS flags
FROM
(
    WITH
        'bot_REPLACE_ME'                            AS wanted_owner, -- param: the owner
        toDateTime('2026-01-01 00:00:00', 'UTC')    AS from_time,    -- param: start (inclusive, UTC)
        toDateTime('2026-02-01 00:00:00', 'UTC')    AS to_time       -- param: end (exclusive, UTC)
    SELECT
        credential_id                 AS cred,
        any(credential_kind)          AS cred_kind,
        endpoint_id                   AS ep,
        toStartOfHour(event_time)     AS hour,
        any(hostname)                 AS host,
        any(port)                     AS p,
        sum(bytes_out * sign)         AS out_b,
        sum(bytes_in * sign)          AS in_b,
        sum(http_requests * sign)     AS reqs,
        sum(tcp_connections * sign)   AS conns,
        min(event_time)               AS first_t,
        max(event_time)               AS last_t,
        groupUniqArrayArray(flags)    AS flags_seen,
        sum(sign)                     AS net_rows
    FROM usage_events
    WHERE status = 'attributed'
      AND owner_id = wanted_owner
      AND event_time >= from_time
      AND event_time < to_time
    GROUP BY cred, ep, hour
)
GROUP BY cred, ep
HAVING sum(net_rows) != 0
ORDER BY data_out_gb DESC, requests DESC, credential, endpoint;
