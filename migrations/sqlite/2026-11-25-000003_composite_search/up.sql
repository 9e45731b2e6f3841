-- Composite search parameters (e.g. Observation code-value-quantity): one row per pair of
-- component values taken from the same element, so both parts must match together.
CREATE TABLE search_composite (
    resource_pk BIGINT NOT NULL,
    param TEXT NOT NULL,
    -- the first component, a token
    system TEXT NOT NULL,
    code TEXT NOT NULL,
    -- the second component: a token, string or reference (v_system, v_code), a quantity or number
    -- (low, high, v_system, v_code), or a date (start_at, end_at)
    v_system TEXT NOT NULL,
    v_code TEXT NOT NULL,
    low REAL,
    high REAL,
    start_at BIGINT,
    end_at BIGINT
);
CREATE INDEX search_composite_by_resource ON search_composite (resource_pk, param);
CREATE INDEX search_composite_lookup_0 ON search_composite (param, code, system, resource_pk);
