-- `pivot-fhir import`: how far each file got, so an interrupted import continues where it
-- stopped, and what failed, so the summary lists every failure even across runs.
CREATE TABLE import_files (
    -- the file's canonical path
    path        TEXT PRIMARY KEY NOT NULL,
    -- lines (NDJSON) or entries (Bundle) processed, written or failed
    done        BIGINT NOT NULL DEFAULT 0,
    written     BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE import_failures (
    path        TEXT NOT NULL,
    -- 1-based line (NDJSON) or entry (Bundle)
    item        BIGINT NOT NULL,
    -- the OperationOutcome, as JSON
    outcome     TEXT NOT NULL,
    PRIMARY KEY (path, item)
);
