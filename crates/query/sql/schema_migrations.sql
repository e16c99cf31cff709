-- The record of applied migrations, created by `botmeter migrate` before it reads or applies any.
-- Read verbatim by crates/query/src/migrate.rs and by tests/python/test_migrations_chdb.py.
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime('UTC')
)
ENGINE = MergeTree
ORDER BY version
