-- One random id per database. Caches outside Postgres (the sink's Redis
-- dedupe cache) key their entries by it, so a cache filled for one
-- database never vouches for rows in another one, such as a fresh
-- database behind the same Redis.
CREATE TABLE waypoint_instance (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    singleton  boolean     NOT NULL DEFAULT true UNIQUE CHECK (singleton)
);
INSERT INTO waypoint_instance DEFAULT VALUES;
