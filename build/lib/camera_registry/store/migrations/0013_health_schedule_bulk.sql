-- The health schedule has one writer in the database: the trigger of migration 0003 for
-- ordinary inserts, and these two functions for a bulk load, which suspends the trigger, the
-- foreign key and the due-time index (per-row costs that doubled a 2.4 M import) and then
-- schedules every camera that has no row yet, set-based, and restores them. The bulk loader
-- calls them; it no longer writes `camera_health` itself.
CREATE FUNCTION camera_health_bulk_begin() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ALTER TABLE cameras DISABLE TRIGGER cameras_schedule_health;
    ALTER TABLE camera_health DROP CONSTRAINT camera_health_camera_id_fkey;
    DROP INDEX camera_health_due;
END $$;

CREATE FUNCTION camera_health_bulk_end() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO camera_health (camera_id, next_probe_at)
    SELECT c.id, now() + random() * interval '5 minutes' FROM cameras c
    WHERE NOT EXISTS (SELECT 1 FROM camera_health h WHERE h.camera_id = c.id);
    CREATE INDEX camera_health_due ON camera_health (next_probe_at);
    ALTER TABLE camera_health ADD CONSTRAINT camera_health_camera_id_fkey
        FOREIGN KEY (camera_id) REFERENCES cameras (id) ON DELETE CASCADE;
    ALTER TABLE cameras ENABLE TRIGGER cameras_schedule_health;
END $$;
