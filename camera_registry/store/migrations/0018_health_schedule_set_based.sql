-- The health schedule without a per-row foreign-key check (issue 13).
--
-- camera_health's foreign key checked every scheduled row on its own: an index probe of
-- `cameras` and a row lock (one WAL record) per new camera, from inside the set-based schedule
-- trigger of migration 0003. Measured on an import's merge: 30-50 µs a camera, more than the
-- insert into `cameras` itself. The schedule's rows only ever come from that trigger, for
-- cameras the same statement inserted, so the check can never fail; what the key still did is
-- the ON DELETE CASCADE, done here by a statement trigger (one set-based DELETE per statement,
-- as the map grid's). The rows scheduled are unchanged: (camera_id, now() + random() × 5 min).

ALTER TABLE camera_health DROP CONSTRAINT camera_health_camera_id_fkey;

-- Sorted by camera id: consecutive inserts land in the same pages of the primary key.
CREATE OR REPLACE FUNCTION camera_health_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO camera_health (camera_id, next_probe_at)
    SELECT id, now() + random() * interval '5 minutes' FROM new_cameras ORDER BY id;
    RETURN NULL;
END $$;

CREATE FUNCTION camera_health_unschedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM camera_health h USING old_cameras o WHERE h.camera_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER cameras_unschedule_health AFTER DELETE ON cameras
    REFERENCING OLD TABLE AS old_cameras FOR EACH STATEMENT
    EXECUTE FUNCTION camera_health_unschedule();

CREATE FUNCTION camera_health_unschedule_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM camera_health;
    RETURN NULL;
END $$;
CREATE TRIGGER cameras_unschedule_health_truncate AFTER TRUNCATE ON cameras
    FOR EACH STATEMENT EXECUTE FUNCTION camera_health_unschedule_all();

-- Migration 0013's bulk suspend/resume (no longer called since imports stopped running DDL)
-- dropped and re-added the key this migration removes.
DROP FUNCTION camera_health_bulk_begin();
DROP FUNCTION camera_health_bulk_end();
