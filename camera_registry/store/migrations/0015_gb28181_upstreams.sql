-- GB/T 28181 cascade: the upper platforms (上级平台) this registry registers to as a lower
-- platform. Rows from the config file are re-synced at every start (source 'config'); rows
-- made over the admin API (source 'api') are kept until deleted. The password is sealed with
-- the credential key like camera credentials; everything else is the validated settings.
CREATE TABLE gb28181_upstreams (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 64),
    source      text NOT NULL CHECK (source IN ('config', 'api')),
    settings    jsonb NOT NULL,
    password    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);
