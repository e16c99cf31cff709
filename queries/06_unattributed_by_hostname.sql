-- Which traffic does ngrok bill that no owner gets? Unattributed usage per missing link and per
-- hostname and port it arrived on, largest data out first, with the owners that ever had an
-- endpoint on that address (from the audit log): a hostname in a gap between two owners, a
-- hostname nobody registered (`no_endpoint`), or an endpoint whose agent session, credential or
-- owner botmeter never heard of (`unknown_session`, `unknown_credential`, `unknown_owner`).
--
-- Parameters: the lines marked `-- param` in the WITH block below.
--   from_time   start of the span (inclusive, UTC)
--   to_time     end of the span (exclusive, UTC)
-- Columns: reason, hostname, port; events, data out and in (GB), HTTP requests, TCP connections,
--   first and last traffic; endpoints_on_address (endpoint_created events for that hostname and
--   port, at any time) and owners_on_address (their owners).
-- Run: clickhouse-client --database botmeter < queries/06_unattributed_by_hostname.sql
-- Runs on ClickHouse 18.16 and current ClickHouse. Every metric is summed times `sign`, every
-- count is sum(sign). `botmeter reattribute` restates such rows once the missing link is known.
SELECT
    reason,
    host                        AS hostname,
    host_port                   AS port,
    events,
    round(out_b / 1e9, 3)       AS data_out_gb,
    round(in_b / 1e9, 3)        AS data_in_gb,
    reqs                        AS requests,
    conns                       AS tcp_conns,
    first_seen,
    last_seen,
    endpoints_on_address,
    owners_on_address
FROM
(
    WITH
        toDateTime('2026-01-01 00:00:00', 'UTC')   AS from_time, -- param: start (inclusive, UTC)
        toDateTime('2026-02-01 00:00:00', 'UTC')   AS to_time    -- param: end (exclusive, UTC)
    SELECT
        unattributed_reason           AS reason,
        hostname                      AS host,
        port                          AS host_port,
        sum(sign)                     AS events,
        sum(bytes_out * sign)         AS out_b,
        sum(bytes_in * sign)          AS in_b,
        sum(http_requests * sign)     AS reqs,
        sum(tcp_connections * sign)   AS conns,
        min(event_time)               AS first_seen,
        max(event_time)               AS last_seen
    FROM usage_events
    WHERE status = 'unattributed'
      AND event_time >= from_time
      AND event_time < to_time
    GROUP BY reason, host, host_port
    HAVING events != 0
) AS unattributed
ANY LEFT JOIN
(
    -- Every address an endpoint ever had, from the audit log (small).
    SELECT
        visitParamExtractString(object, 'host')            AS host,
        toUInt16(visitParamExtractUInt(object, 'port'))    AS host_port,
        count()                                            AS endpoints_on_address,
        groupUniqArray(owner_id)                           AS owners_on_address
    FROM control_events
    WHERE event_type = 'endpoint_created.v0'
    GROUP BY host, host_port
) AS addresses USING host, host_port
ORDER BY data_out_gb DESC, events DESC, reason, hostname, port;
