-- Bulk Data $export jobs: the client that started one (only it, or an administrator, may poll,
-- download or cancel), and what a job has produced so far (the finished output files), so a
-- job taken over after a restart goes on where it stopped.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN result TEXT;
CREATE INDEX jobs_kind_status ON jobs (kind, status);
