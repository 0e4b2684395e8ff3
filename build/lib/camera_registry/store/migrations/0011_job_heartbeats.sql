-- Long jobs that survive real operations (issues 3, 5).
--
-- Owner and heartbeat: a job in 'queued'/'running' belongs to one process (`owner`, a
-- host:pid:nonce string), which refreshes `heartbeat_at` while the job lives. A server killed
-- hard (SIGKILL, power loss) stops refreshing; any process then marks the job failed once its
-- heartbeat is older than the configured limit (camera_registry/heartbeats.py), so no job
-- stays 'running' forever. Rows from before this migration have no heartbeat: their age is
-- counted from created_at, so a job orphaned by an older server is closed as well.
ALTER TABLE coverage_runs
    ADD COLUMN owner text,
    ADD COLUMN heartbeat_at timestamptz;
ALTER TABLE discovery_scans
    ADD COLUMN owner text,
    ADD COLUMN heartbeat_at timestamptz;
ALTER TABLE import_jobs
    ADD COLUMN owner text,
    ADD COLUMN heartbeat_at timestamptz;

-- The reaper looks only at unfinished jobs: small partial indexes, whatever the history.
CREATE INDEX coverage_runs_live ON coverage_runs (coalesce(heartbeat_at, created_at))
    WHERE status IN ('queued', 'running');
CREATE INDEX discovery_scans_live ON discovery_scans (coalesce(heartbeat_at, created_at))
    WHERE status IN ('queued', 'running');
CREATE INDEX import_jobs_live ON import_jobs (coalesce(heartbeat_at, created_at))
    WHERE status IN ('queued', 'running');

-- Identical coverage requests join the live run: at most one queued/running run per region
-- and inputs fingerprint, enforced by the database whatever the number of server processes.
-- Duplicates left by older servers are closed first (the newest stays live).
UPDATE coverage_runs r SET status = 'failed', finished_at = now(),
       error = 'superseded: an identical run was started later',
       message = 'superseded'
WHERE status IN ('queued', 'running') AND EXISTS (
    SELECT 1 FROM coverage_runs n
    WHERE n.region = r.region AND n.inputs_version = r.inputs_version
      AND n.status IN ('queued', 'running')
      AND (n.created_at, n.id) > (r.created_at, r.id));
CREATE UNIQUE INDEX coverage_runs_one_live ON coverage_runs (region, inputs_version)
    WHERE status IN ('queued', 'running');
