-- Stream health: one row per camera (state, last results, schedule, lease), and the status
-- transitions (not every probe) from which 在线率 over any period is computed exactly.

ALTER TABLE cameras DROP CONSTRAINT cameras_status_check;
ALTER TABLE cameras ADD CONSTRAINT cameras_status_check
    CHECK (status IN ('unknown', 'online', 'offline', 'degraded', 'flapping'));

CREATE TABLE camera_health (
    camera_id       uuid PRIMARY KEY REFERENCES cameras (id) ON DELETE CASCADE,
    state           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- health.status.CameraState
    last_probe_at   timestamptz,
    last_probe      jsonb,                                -- step timings, failure, SDP facts
    next_probe_at   timestamptz NOT NULL,
    failures        integer NOT NULL DEFAULT 0,           -- consecutive, for the backoff
    lease_owner     text,
    lease_until     timestamptz
);
-- Workers take the most overdue cameras; SKIP LOCKED lets any number of them share the queue.
CREATE INDEX camera_health_due ON camera_health (next_probe_at);

CREATE TABLE status_transitions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    camera_id  uuid NOT NULL REFERENCES cameras (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    old        text NOT NULL,
    new        text NOT NULL,
    reason     text NOT NULL
);
CREATE INDEX status_transitions_camera ON status_transitions (camera_id, at);

-- Every registered camera is scheduled: existing ones spread over the first five minutes,
-- new ones (set-based, once per INSERT statement, so bulk imports stay cheap) likewise.
INSERT INTO camera_health (camera_id, next_probe_at)
SELECT id, now() + random() * interval '5 minutes' FROM cameras;

CREATE FUNCTION camera_health_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO camera_health (camera_id, next_probe_at)
    SELECT id, now() + random() * interval '5 minutes' FROM new_cameras;
    RETURN NULL;
END $$;
CREATE TRIGGER cameras_schedule_health AFTER INSERT ON cameras
    REFERENCING NEW TABLE AS new_cameras FOR EACH STATEMENT
    EXECUTE FUNCTION camera_health_schedule();
