-- Attribution of recipients to Pivot Entities: one row per membership period, kept current on
-- every Patient write in the same transaction. The attribution Groups show these rows as their
-- members (a Group resource rewritten on every enrolment would grow with the population).
CREATE TABLE attribution (
    patient_id   TEXT NOT NULL,
    -- the Pivot Entity, as a reference: Organization/{id}
    entity       TEXT NOT NULL,
    region       TEXT NOT NULL,
    -- microseconds since the Unix epoch, UTC
    period_start BIGINT NOT NULL,
    -- NULL while the membership is current
    period_end   BIGINT
);
CREATE INDEX attribution_by_patient ON attribution (patient_id, period_end);
CREATE INDEX attribution_by_entity ON attribution (entity, period_start);
