-- Discovery scans as jobs, inbox statuses, and identity across scans (issue 3).
-- A device keeps one inbox row whatever its address: it is matched by WS-Discovery endpoint,
-- then MAC, then serial (inbox.py), so an IP change updates the row (and its cameras).
ALTER TABLE discovered_devices
    ADD COLUMN status text NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'registered', 'ignored')),
    ADD COLUMN clock_skew_s double precision,   -- device clock minus ours at the last scan
    ADD COLUMN ptz boolean,                     -- offers a PTZ service
    ADD CONSTRAINT discovered_devices_failure_known CHECK (failure IS NULL OR failure IN (
        'unreachable', 'not_onvif', 'auth_failed', 'clock_skew', 'no_media_profile',
        'malformed_response', 'timeout'));
UPDATE discovered_devices SET status = 'registered' WHERE camera_id IS NOT NULL;
CREATE INDEX discovered_devices_serial ON discovered_devices (serial) WHERE serial IS NOT NULL;
CREATE INDEX discovered_devices_status ON discovered_devices (status, last_seen);

-- Every camera registered from a device: one per channel of an NVR or encoder.
CREATE TABLE discovered_device_cameras (
    device_id  uuid NOT NULL REFERENCES discovered_devices (id) ON DELETE CASCADE,
    camera_id  uuid NOT NULL REFERENCES cameras (id) ON DELETE CASCADE,
    channel    text NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, camera_id)
);
INSERT INTO discovered_device_cameras (device_id, camera_id)
    SELECT id, camera_id FROM discovered_devices WHERE camera_id IS NOT NULL;
CREATE INDEX discovered_device_cameras_camera ON discovered_device_cameras (camera_id);

-- A scan started over the API: what to sweep (never the credentials, which are sealed
-- apart), who started it in which region scope, and its progress.
CREATE TABLE discovery_scans (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    request       jsonb NOT NULL,             -- cidrs, interfaces, ports, limits
    credentials   bytea,                      -- sealed like cameras'; dropped when finished
    addresses     integer NOT NULL DEFAULT 0, -- addresses to probe
    probed        integer NOT NULL DEFAULT 0,
    found         integer NOT NULL DEFAULT 0,
    interrogated  integer NOT NULL DEFAULT 0,
    failed        jsonb NOT NULL DEFAULT '{}'::jsonb,  -- failure category -> count
    error         text,
    scope         text COLLATE "C",           -- region scope of the scanning token
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);

-- Which devices each scan saw (a device is seen by many scans).
CREATE TABLE discovery_scan_devices (
    scan_id    uuid NOT NULL REFERENCES discovery_scans (id) ON DELETE CASCADE,
    device_id  uuid NOT NULL REFERENCES discovered_devices (id) ON DELETE CASCADE,
    PRIMARY KEY (scan_id, device_id)
);
CREATE INDEX discovery_scan_devices_device ON discovery_scan_devices (device_id);
