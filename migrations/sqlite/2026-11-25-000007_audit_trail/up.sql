-- The audit trail: one row per FHIR interaction (who, which client, what, when, outcome), never
-- resource content. Served read-only as AuditEvent resources to administrators.
CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY,
    recorded       BIGINT NOT NULL,
    interaction    TEXT NOT NULL,
    action         TEXT NOT NULL,
    status         INTEGER NOT NULL,
    client_id      TEXT NOT NULL,
    fhir_user      TEXT,
    resource_type  TEXT,
    resource_id    TEXT,
    version_id     BIGINT,
    query          TEXT,
    request_id     TEXT
);
CREATE INDEX audit_events_by_recorded ON audit_events (recorded);
CREATE INDEX audit_events_by_entity ON audit_events (resource_type, resource_id);
CREATE INDEX audit_events_by_client ON audit_events (client_id);
CREATE INDEX audit_events_by_user ON audit_events (fhir_user);
