-- Every principal (user or bot user who acted) of the audit log with its latest subject (email or
-- bot name), and every credential owner named by a credential event. Read verbatim by the HTTP API
-- (crates/query/src/api/catalog.rs) and by tests/python/test_reports_chdb.py. No placeholders.
SELECT
    toString(who)     AS p_id,
    toString(subject) AS p_subject
FROM
(
    SELECT who, argMax(subject, t) AS subject
    FROM
    (
        SELECT arrayJoin([(principal_id, principal_subject), (owner_id, '')]) AS pair,
               pair.1 AS who, pair.2 AS subject, if(pair.2 = '', toInt64(0), event_time_us) AS t
        FROM control_events
        WHERE principal_id != '' OR owner_id != ''
    )
    WHERE who != ''
    GROUP BY who
)
ORDER BY p_id
