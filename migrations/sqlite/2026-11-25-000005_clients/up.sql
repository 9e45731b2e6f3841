-- Registered backend-service clients (SMART Backend Services): they sign their token requests
-- with a key from their JWKS and get at most their registered scopes.
CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY NOT NULL,
    jwks        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    fhir_user   TEXT,
    created_at  BIGINT NOT NULL
);

-- Client assertions already used (jti), kept until they expire, so none is accepted twice.
CREATE TABLE used_assertions (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
