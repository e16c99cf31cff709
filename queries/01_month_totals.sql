-- Does botmeter see the jump too? The account's usage this month so far against the same span of
-- the previous month, per outcome: attributed (to an owner), unattributed (no owner found), and
-- dead letters (messages that could not be decoded; they carry no metrics, only a count).
--
-- Parameters: the lines marked `-- param` in the WITH block below.
--   month_start  the first day of the month to look at (UTC)
--   until        the end of the span looked at (exclusive); now() for "so far". The previous
--                month is cut to the same length, so a half month compares with a half month.
-- Columns: status; events, data out (GB), HTTP requests, TCP connections and active endpoint
--   hours (endpoint, UTC hour pairs with outgoing bytes), this span and the previous one.
-- Run: clickhouse-client --database botmeter < queries/01_month_totals.sql (or paste it).
-- Runs on ClickHouse 18.16 and current ClickHouse. Every metric is summed times `sign` (restated
-- rows cancel), every count is sum(sign).
SELECT
    status,
    sumIf(net_rows, period = 'this')                                  AS events,
    sumIf(net_rows, period = 'prev')                                  AS prev_events,
    round(sumIf(out_b, period = 'this') / 1e9, 3)                     AS data_out_gb,
    round(sumIf(out_b, period = 'prev') / 1e9, 3)                     AS prev_data_out_gb,
    sumIf(reqs, period = 'this')                                      AS requests,
    sumIf(reqs, period = 'prev')                                      AS prev_requests,
    sumIf(conns, period = 'this')                                     AS tcp_conns,
    sumIf(conns, period = 'prev')                                     AS prev_tcp_conns,
    countIf(period = 'this' AND out_b > 0 AND ep != '')               AS endpoint_hours,
    countIf(period = 'prev' AND out_b > 0 AND ep != '')               AS prev_endpoint_hours
FROM
(
    WITH
        toDate('2026-01-01')                        AS month_start, -- param: first day of the month (UTC)
        now()                                       AS until,       -- param: end of the span (exclusive)
        toDateTime(month_start, 'UTC')              AS this_from,
        least(toDateTime(until, 'UTC'), toDateTime(addMonths(month_start, 1), 'UTC')) AS this_to,
        toDateTime(addMonths(month_start, -1), 'UTC') AS prev_from,
        toDateTime(toUInt32(prev_from) + (toUInt32(this_to) - toUInt32(this_from)), 'UTC') AS prev_to
    SELECT
        status,
        if(event_time >= this_from, 'this', 'prev') AS period,
        endpoint_id                                 AS ep,
        toStartOfHour(event_time)                   AS hour,
        sum(bytes_out * sign)                       AS out_b,
        sum(http_requests * sign)                   AS reqs,
        sum(tcp_connections * sign)                 AS conns,
        sum(sign)                                   AS net_rows
    FROM usage_events
    WHERE ((event_time >= this_from AND event_time < this_to)
        OR (event_time >= prev_from AND event_time < prev_to))
    GROUP BY status, period, ep, hour
)
GROUP BY status
ORDER BY status;
