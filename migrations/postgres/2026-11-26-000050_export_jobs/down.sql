DROP INDEX jobs_kind_status;
ALTER TABLE jobs DROP COLUMN result;
ALTER TABLE jobs DROP COLUMN owner;
