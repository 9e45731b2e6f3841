-- Search index: rows extracted from the current version of each resource, one table per
-- parameter type, keyed by resources.pk and rewritten in the same transaction as the resource.
-- No foreign key: the rows only ever change with their resource, and checking a key on every
-- index row would cost more than it protects.

CREATE TABLE search_string (
    resource_pk BIGINT NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    normalized TEXT COLLATE "C" NOT NULL, exact TEXT COLLATE "C" NOT NULL
);
CREATE INDEX search_string_by_resource ON search_string (resource_pk, param);
CREATE INDEX search_string_lookup_0 ON search_string (param, normalized, resource_pk);
CREATE TABLE search_token (
    resource_pk BIGINT NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    system TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL, text TEXT COLLATE "C" NOT NULL
);
CREATE INDEX search_token_by_resource ON search_token (resource_pk, param);
CREATE INDEX search_token_lookup_0 ON search_token (param, code, system, resource_pk);
CREATE TABLE search_reference (
    resource_pk BIGINT NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    target_type TEXT COLLATE "C" NOT NULL, target_id TEXT COLLATE "C" NOT NULL, url TEXT COLLATE "C" NOT NULL
);
CREATE INDEX search_reference_by_resource ON search_reference (resource_pk, param);
CREATE INDEX search_reference_lookup_0 ON search_reference (param, target_id, target_type, resource_pk);
CREATE INDEX search_reference_lookup_1 ON search_reference (target_id, target_type, param);
CREATE TABLE search_date (
    resource_pk BIGINT NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    start_at BIGINT NOT NULL, end_at BIGINT NOT NULL
);
CREATE INDEX search_date_by_resource ON search_date (resource_pk, param);
CREATE INDEX search_date_lookup_0 ON search_date (param, start_at, end_at, resource_pk);
CREATE TABLE search_quantity (
    resource_pk BIGINT NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    low DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL, system TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL
);
CREATE INDEX search_quantity_by_resource ON search_quantity (resource_pk, param);
CREATE INDEX search_quantity_lookup_0 ON search_quantity (param, low, high, resource_pk);
CREATE TABLE search_uri (
    resource_pk BIGINT NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    uri TEXT COLLATE "C" NOT NULL
);
CREATE INDEX search_uri_by_resource ON search_uri (resource_pk, param);
CREATE INDEX search_uri_lookup_0 ON search_uri (param, uri, resource_pk);
