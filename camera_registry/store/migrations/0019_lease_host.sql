-- The device host of each live lease, so that a per-host session cap is checked by looking up
-- the hosts of the cameras about to be leased (an index probe each) instead of counting every
-- live lease of the province: leasing no longer needs one lock for all workers (issue 13).
-- Set by the lease from the stream URI it hands out, cleared with the lease. Rows created by
-- the schedule trigger (migration 0003) start without a lease, so without a host.
ALTER TABLE camera_health ADD COLUMN lease_host text;
-- Replaces `camera_health_leased` (lease_until): with it, the planner counted a host's leases
-- by walking every lease of the last minute, released ones included, instead of probing the
-- host. The leases-outstanding gauge reads this one whole; it holds only leased rows.
CREATE INDEX camera_health_lease_host ON camera_health (lease_host, lease_until)
    WHERE lease_until IS NOT NULL;
DROP INDEX camera_health_leased;
