-- The discovery inbox: devices found on the networks, with what interrogation learnt, until a
-- technician registers them (or they are ignored). One row per device endpoint.
CREATE TABLE discovered_devices (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint      text NOT NULL UNIQUE,       -- WS-Discovery EndpointReference, else http://ip:port
    address       text NOT NULL,
    port          integer NOT NULL,
    xaddrs        jsonb NOT NULL DEFAULT '[]'::jsonb,
    vendor        text,
    model         text,
    firmware      text,
    serial        text,
    mac           text,
    profiles      jsonb NOT NULL DEFAULT '[]'::jsonb,
    failure       text,
    detail        text,
    credentials   bytea,                      -- sealed, as for cameras: what worked on it
    found_scope   text COLLATE "C",           -- region scope of whoever scanned
    found_by      text NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    camera_id     uuid REFERENCES cameras (id) ON DELETE SET NULL
);
CREATE INDEX discovered_devices_mac ON discovered_devices (mac) WHERE mac IS NOT NULL;
