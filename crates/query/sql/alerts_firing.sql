-- Alerts firing now, per rule and kind, for `botmeter serve`'s `botmeter_alerts_firing` gauge
-- (crates/query/src/api/alert_gauges.rs): the newest version (argMax over `version`, as
-- alerts_list.sql reads it) of each alert id, counted per rule and kind when firing. Every rule
-- and kind with an alert in the table has a row (0 once all its alerts resolved), so the gauge
-- has one series per rule that ever fired, whichever instance evaluated it.
-- No placeholders. Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(f_rule)                  AS g_rule,
    toString(f_kind)                  AS g_kind,
    toUInt64(sum(f_state = 'firing')) AS g_firing
FROM
(
    SELECT
        alert_id,
        argMax(rule, version)  AS f_rule,
        argMax(kind, version)  AS f_kind,
        argMax(state, version) AS f_state
    FROM alerts
    GROUP BY alert_id
)
GROUP BY f_rule, f_kind
ORDER BY g_rule, g_kind
