-- Restatement without double counting: `botmeter reattribute` never rewrites a row. It inserts a
-- copy of the row it restates with sign = -1 and the new row with sign = +1, in one insert, so
-- every report sums `metric * sign` and the totals always equal the raw truth (also for rollups,
-- which sum the same way). Rows written by `botmeter run` have sign = +1.
-- One statement per file: ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS.
ALTER TABLE usage_events ADD COLUMN sign Int8 DEFAULT 1
