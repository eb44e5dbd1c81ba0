-- Tracking of the read models (`reserves replay` rebuilds them from the event store at will).
CREATE TABLE IF NOT EXISTS rm_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);
-- One row per projection ('orders', 'requests'): the last position applied to its tables;
-- 'relay': the last position published to Kafka. A database from before the split kept one
-- row 'views' for every table: both projections start where it was.
INSERT INTO rm_tracking (name, position)
SELECT p.name, COALESCE((SELECT position FROM rm_tracking WHERE name = 'views'), 0)
FROM (VALUES ('orders'), ('requests')) AS p(name)
WHERE NOT EXISTS (SELECT 1 FROM rm_tracking t WHERE t.name = p.name)
ON CONFLICT DO NOTHING;
DELETE FROM rm_tracking WHERE name = 'views';
-- Rows already there are not written again: a process starting beside a running projector or
-- relay must not wait on the tracking rows they hold.
INSERT INTO rm_tracking (name) SELECT 'relay'
WHERE NOT EXISTS (SELECT 1 FROM rm_tracking WHERE name = 'relay')
ON CONFLICT DO NOTHING;
