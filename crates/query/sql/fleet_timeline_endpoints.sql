-- Every endpoint of the fleet's timeline (crates/query/src/api/fleet/timeline.rs), whatever the
-- time, from the state table of migration 0013: the agent session its endpoint_created.v0 names
-- as tunnel_session, its creation and first endpoint_deleted.v0 (0 when none). Read verbatim by
-- the HTTP API and by tests/python/test_fleet_chdb.py.
--
-- No placeholders. Must run on ClickHouse 18.16 and current ClickHouse.
SELECT
    toString(endpoint_session) AS e_session_id,
    toInt64(created)           AS e_created_us,
    toInt64(deleted)           AS e_deleted_us
FROM
(
    SELECT
        endpoint_id,
        anyIfMerge(session)    AS endpoint_session,
        minIfMerge(created_us) AS created,
        minIfMerge(deleted_us) AS deleted
    FROM fleet_endpoints
    GROUP BY endpoint_id
)
WHERE created > 0
  AND endpoint_session != ''
