-- GB/T 28181 device access: devices (IPC, NVR, encoder, lower platform …) that register to our
-- SIP server, and the catalog each one hands over. Cameras among the catalog items live in
-- `cameras` (written only by the cameras store); this keeps the device, the tree and the link.
CREATE TABLE gb_devices (
    device_id       text COLLATE "C" PRIMARY KEY CHECK (char_length(device_id) = 20),
    type_code       text COLLATE "C" NOT NULL,            -- digits 11-13: 111, 118, 132, 200 …
    region_code     text COLLATE "C" NOT NULL,            -- digits 1-6, for region scope
    password        bytea,                                 -- sealed per-device password, else the default
    transport       text,
    source_host     text,
    source_port     integer,
    contact         text,
    user_agent      text,
    charset         text,
    registered_at   timestamptz,
    expires_at      timestamptz,
    last_keepalive  timestamptz,
    online          boolean NOT NULL DEFAULT false,
    name            text,
    manufacturer    text,
    model           text,
    firmware        text,
    channel_count   integer,
    catalog_at      timestamptz,
    catalog_complete boolean,
    catalog_items   integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gb_devices_region ON gb_devices (region_code);

CREATE TABLE gb_catalog_items (
    device_id    text COLLATE "C" NOT NULL REFERENCES gb_devices (device_id) ON DELETE CASCADE,
    item_id      text COLLATE "C" NOT NULL,
    parent_id    text COLLATE "C",
    type_code    text COLLATE "C" NOT NULL,
    name         text,
    civil_code   text COLLATE "C",
    status       text,                       -- ON / OFF / VLOST / DEFECT as the device says
    item         jsonb NOT NULL,             -- every field as parsed (no secrets in a catalog)
    camera_id    uuid REFERENCES cameras (id) ON DELETE SET NULL,
    problem      text,                       -- why it could not become a camera (inbox)
    removed      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, item_id)
);
CREATE INDEX gb_catalog_items_camera ON gb_catalog_items (camera_id) WHERE camera_id IS NOT NULL;

-- Invalid catalog items wait in the discovery inbox like ONVIF devices that need a technician.
ALTER TABLE discovered_devices DROP CONSTRAINT discovered_devices_failure_known;
ALTER TABLE discovered_devices
    ADD CONSTRAINT discovered_devices_failure_known CHECK (failure IS NULL OR failure IN (
        'unreachable', 'not_onvif', 'auth_failed', 'clock_skew', 'no_media_profile',
        'malformed_response', 'timeout', 'gb28181_invalid'));
