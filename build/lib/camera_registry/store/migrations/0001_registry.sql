-- Registry core: cameras, region serials, tokens, audit log, import jobs.
-- Unqualified names: the schema comes from search_path (tests give each module its own).

CREATE TABLE cameras (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Value rules (ranges, formats, GB ID digits) live in camera_registry/validate.py, which
    -- every write passes; CHECKs here are kept to the structural ones, because each CHECK is
    -- paid per row on a 2.4-million-row import (measured: the range CHECKs alone cost 40 % of
    -- the insert).
    gb_id             text COLLATE "C" NOT NULL CHECK (char_length(gb_id) = 20),
    name              text NOT NULL,
    level             smallint NOT NULL CHECK (level IN (1, 2, 3, 9)),
    lon               double precision,
    lat               double precision,
    geom              point GENERATED ALWAYS AS (point(lon, lat)) STORED,
    region_code       text COLLATE "C" NOT NULL CHECK (char_length(region_code) = 6),
    address           text,
    azimuth           real,
    hfov              real,
    vfov              real,
    max_view_distance real,
    mount_height      real,
    owner             text,
    contact           text,
    installed_at      date,
    record_days       integer,
    vendor            text,
    model             text,
    firmware          text,
    serial            text,
    mac               text,
    ip                inet,
    onvif_port        integer,
    streams           jsonb NOT NULL DEFAULT '{}'::jsonb,
    credentials       bytea,          -- AES-GCM(nonce || ciphertext) of {"username","password"}
    credentials_mac   bytea,          -- HMAC of the same, so re-imports can tell "unchanged"
    status            text NOT NULL DEFAULT 'unknown'
                      CHECK (status IN ('unknown', 'online', 'offline', 'degraded')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           integer NOT NULL DEFAULT 1,
    CHECK ((lon IS NULL) = (lat IS NULL)),
    CHECK (level NOT IN (1, 2) OR lon IS NOT NULL),
    CHECK (left(gb_id, 6) = region_code)
);

-- Secondary indexes are named here because a large first import drops and rebuilds them
-- (camera_registry/bulk.py): a sorted rebuild is far cheaper than millions of inserts.
CREATE UNIQUE INDEX cameras_gb_id ON cameras (gb_id);
CREATE INDEX cameras_geom_gist ON cameras USING gist (geom);
CREATE INDEX cameras_region_level_status ON cameras (region_code, level, status);

-- Next serial per region for generated GB IDs (digits 15-20).
CREATE TABLE region_serials (
    region_code text COLLATE "C" PRIMARY KEY,
    next_serial integer NOT NULL CHECK (next_serial BETWEEN 0 AND 1000000)
);

CREATE TABLE api_tokens (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL,
    role           text NOT NULL CHECK (role IN ('technician', 'planner', 'commander', 'admin')),
    region_prefix  text COLLATE "C" CHECK (region_prefix ~ '^[0-9]{2,6}$'),
    secret_hash    bytea NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    expires_at     timestamptz,
    revoked_at     timestamptz,
    last_used_at   timestamptz
);

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text NOT NULL,
    token_id     uuid,
    action       text NOT NULL,
    camera_id    uuid,
    region_code  text COLLATE "C",
    remote_addr  text,
    before       jsonb,
    after        jsonb,
    detail       jsonb
);
CREATE INDEX audit_log_camera ON audit_log (camera_id, id) WHERE camera_id IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE import_jobs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor        text NOT NULL,
    token_id     uuid,
    filename     text NOT NULL,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'rejected', 'failed')),
    dry_run      boolean NOT NULL,
    partial      boolean NOT NULL,
    crs          text NOT NULL,
    progress     real NOT NULL DEFAULT 0,
    rows_total   integer NOT NULL DEFAULT 0,
    rows_bad     integer NOT NULL DEFAULT 0,
    inserted     integer NOT NULL DEFAULT 0,
    updated      integer NOT NULL DEFAULT 0,
    unchanged    integer NOT NULL DEFAULT 0,
    warnings     jsonb NOT NULL DEFAULT '[]'::jsonb,
    message      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);

-- Every bad row of every import, so a report is never truncated.
CREATE TABLE import_errors (
    job_id   uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    seq      integer NOT NULL,
    row_no   integer,
    field    text NOT NULL,
    message  text NOT NULL,
    PRIMARY KEY (job_id, seq)
);
