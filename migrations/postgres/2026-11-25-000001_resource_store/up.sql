-- Every version of every resource, kept forever: vread and history read from here.
CREATE TABLE resource_versions (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    version_id    BIGINT NOT NULL,
    -- microseconds since the Unix epoch, UTC; strictly increasing per resource
    last_updated  BIGINT NOT NULL,
    -- the interaction that made this version: POST, PUT, PATCH or DELETE
    method        TEXT NOT NULL,
    -- NULL for a deletion
    content       TEXT,
    PRIMARY KEY (resource_type, id, version_id)
);
CREATE INDEX resource_versions_by_time ON resource_versions (last_updated);
CREATE INDEX resource_versions_by_type_time ON resource_versions (resource_type, last_updated);

-- The current version of each resource: reads, search and its index rows (keyed by pk) use this.
CREATE TABLE resources (
    pk            BIGSERIAL PRIMARY KEY,
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    version_id    BIGINT NOT NULL,
    last_updated  BIGINT NOT NULL,
    deleted       INTEGER NOT NULL DEFAULT 0,
    content       TEXT,
    UNIQUE (resource_type, id)
);
CREATE INDEX resources_by_type_updated ON resources (resource_type, last_updated);
