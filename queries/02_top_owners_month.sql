-- Which bots (and users) drove this month's data transfer out? Each owner's usage this month so
-- far against the same span of the previous month, its share of the month's data out, and its share
-- of the increase: the owners at the top explain the jump. Traffic botmeter could not attribute is
-- one more row, `(unattributed)`; ngrok bills it too (see 06_unattributed_by_hostname.sql).
--
-- Parameters: the lines marked `-- param` in the WITH block below.
--   month_start  the first day of the month to look at (UTC)
--   until        the end of the span looked at (exclusive); now() for "so far". The previous
--                month is cut to the same length.
-- Columns: owner, owner_type; data out (GB) this span and the previous one, the change, the share of
--   this span's data out and of the account's change; HTTP requests and TCP connections, both spans.
-- Run: clickhouse-client --database botmeter < queries/02_top_owners_month.sql (or paste it).
-- Runs on ClickHouse 18.16 and current ClickHouse (18.16 has no window functions: the shares are
-- taken over an array of all rows). Every metric is summed times `sign`.
SELECT
    tupleElement(r, 1)                                                  AS owner,
    tupleElement(r, 2)                                                  AS owner_type,
    round(tupleElement(r, 3) / 1e9, 3)                                  AS data_out_gb,
    round(tupleElement(r, 4) / 1e9, 3)                                  AS prev_data_out_gb,
    round((tupleElement(r, 3) - tupleElement(r, 4)) / 1e9, 3)           AS change_gb,
    round(tupleElement(r, 3) / greatest(total_out, 1), 4)               AS share_of_data_out,
    if(total_change > 0,
       round((tupleElement(r, 3) - tupleElement(r, 4)) / total_change, 4), 0) AS share_of_increase,
    tupleElement(r, 5)                                                  AS requests,
    tupleElement(r, 6)                                                  AS prev_requests,
    tupleElement(r, 7)                                                  AS tcp_conns,
    tupleElement(r, 8)                                                  AS prev_tcp_conns
FROM
(
    SELECT
        groupArray((owner_key, kind, out_this, out_prev, reqs_this, reqs_prev, conns_this, conns_prev)) AS owners,
        sum(out_this)                 AS total_out,
        sum(out_this) - sum(out_prev) AS total_change
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
            if(status = 'attributed', owner_id, '(unattributed)')                      AS owner_key,
            any(if(status = 'attributed', owner_kind, ''))                             AS kind,
            sumIf(bytes_out * sign, event_time >= this_from)                           AS out_this,
            sumIf(bytes_out * sign, event_time < this_from)                            AS out_prev,
            sumIf(http_requests * sign, event_time >= this_from)                       AS reqs_this,
            sumIf(http_requests * sign, event_time < this_from)                        AS reqs_prev,
            sumIf(tcp_connections * sign, event_time >= this_from)                     AS conns_this,
            sumIf(tcp_connections * sign, event_time < this_from)                      AS conns_prev,
            sum(sign)                                                                  AS net_rows
        FROM usage_events
        WHERE status IN ('attributed', 'unattributed')
          AND ((event_time >= this_from AND event_time < this_to)
            OR (event_time >= prev_from AND event_time < prev_to))
        GROUP BY owner_key
        HAVING net_rows != 0
    )
)
ARRAY JOIN owners AS r
ORDER BY tupleElement(r, 3) DESC, owner;
