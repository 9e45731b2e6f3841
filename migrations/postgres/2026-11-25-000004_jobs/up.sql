-- Background jobs ($reindex, later exports): their progress is kept here, so a job survives a
-- restart and any server node can report on it.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    -- queued, running, completed, failed, cancelled
    status      TEXT NOT NULL,
    parameters  TEXT NOT NULL,
    -- the last resources.pk processed (jobs walk resources in key order)
    cursor      BIGINT NOT NULL DEFAULT 0,
    processed   BIGINT NOT NULL DEFAULT 0,
    total       BIGINT NOT NULL DEFAULT 0,
    message     TEXT,
    created_at  BIGINT NOT NULL,
    -- heartbeat of the node working on it; a stale one lets another node take over
    updated_at  BIGINT NOT NULL
);

-- Small shared facts of the cluster, e.g. the version of the search parameter set, which every
-- node polls to reload its registry after a $reindex on another node.
CREATE TABLE server_state (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
