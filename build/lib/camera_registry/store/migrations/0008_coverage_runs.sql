-- Coverage runs (issue 5): a run measures a region against the layout policy and keeps its
-- gaps, per-county summary rows and site proposals, so the API can page through them and a
-- second request with unchanged inputs reuses them instead of recomputing.
--
-- "Unchanged inputs" needs a cheap registry fingerprint: camera_geo_versions counts, per
-- county, the statements that changed anything coverage depends on (position, level, aim,
-- range). The counters are transactional rows, so a run that reads the fingerprint before it
-- reads cameras can only be too cautious, never stale. One row per county keeps concurrent
-- writers in different counties from queueing on one counter row; health status updates
-- change no coverage column and bump nothing.

CREATE TABLE camera_geo_versions (
    region_code text COLLATE "C" PRIMARY KEY,
    version     bigint NOT NULL DEFAULT 1
);

CREATE FUNCTION camera_geo_bump_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO camera_geo_versions AS v (region_code)
    SELECT DISTINCT region_code FROM new_rows ORDER BY 1   -- sorted: no lock-order deadlocks
    ON CONFLICT (region_code) DO UPDATE SET version = v.version + 1;
    RETURN NULL;
END $$;

CREATE FUNCTION camera_geo_bump_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO camera_geo_versions AS v (region_code)
    SELECT DISTINCT region_code FROM old_rows ORDER BY 1
    ON CONFLICT (region_code) DO UPDATE SET version = v.version + 1;
    RETURN NULL;
END $$;

CREATE FUNCTION camera_geo_bump_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO camera_geo_versions AS v (region_code)
    SELECT DISTINCT code FROM (
        SELECT unnest(ARRAY[o.region_code, n.region_code]) AS code
        FROM old_rows o JOIN new_rows n USING (id)
        WHERE (o.lon, o.lat, o.level, o.azimuth, o.hfov, o.max_view_distance, o.mount_height,
               o.region_code)
              IS DISTINCT FROM
              (n.lon, n.lat, n.level, n.azimuth, n.hfov, n.max_view_distance, n.mount_height,
               n.region_code)
    ) changed ORDER BY 1
    ON CONFLICT (region_code) DO UPDATE SET version = v.version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER cameras_geo_version_insert AFTER INSERT ON cameras
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION camera_geo_bump_new();
CREATE TRIGGER cameras_geo_version_delete AFTER DELETE ON cameras
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION camera_geo_bump_old();
CREATE TRIGGER cameras_geo_version_update AFTER UPDATE ON cameras
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION camera_geo_bump_changed();

CREATE TABLE coverage_runs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    region         text COLLATE "C" NOT NULL CHECK (region ~ '^[0-9]{2,6}$'),
    policy         jsonb NOT NULL,
    proposals      integer NOT NULL CHECK (proposals BETWEEN 0 AND 5000),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'done', 'failed')),
    progress       real NOT NULL DEFAULT 0,
    message        text,
    error          text,
    summary        jsonb,
    inputs_version text NOT NULL,   -- cameras + geodata + policy + K fingerprint (see above)
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz
);
CREATE INDEX coverage_runs_reuse ON coverage_runs (region, inputs_version, created_at DESC);

-- Gaps: merged uncovered cells (polygons) and uncovered villages/junctions (points), as
-- GeoJSON geometry text in WGS-84 (served as is) with a box for viewport queries.
CREATE TABLE coverage_gaps (
    run_id      uuid NOT NULL REFERENCES coverage_runs (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('cell', 'village', 'junction')),
    region_code text COLLATE "C" NOT NULL,
    priority    double precision NOT NULL,
    area_m2     double precision,
    name        text,
    geometry    text NOT NULL,
    bbox        box NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX coverage_gaps_bbox ON coverage_gaps USING gist (bbox);
CREATE INDEX coverage_gaps_rank ON coverage_gaps (run_id, priority DESC, seq);

CREATE TABLE coverage_summary (
    run_id            uuid NOT NULL REFERENCES coverage_runs (id) ON DELETE CASCADE,
    region_code       text COLLATE "C" NOT NULL,
    name              text NOT NULL,
    zone              text NOT NULL CHECK (zone IN ('urban', 'rural')),
    area_km2          double precision NOT NULL,
    cells             integer NOT NULL,
    cells_covered     integer NOT NULL,
    covered_share     double precision,
    villages          integer NOT NULL,
    villages_covered  integer NOT NULL,
    junctions         integer NOT NULL,
    junctions_covered integer NOT NULL,
    cameras           integer NOT NULL,
    cameras_assumed   integer NOT NULL,  -- no orientation: counted as discs of the level radius
    cameras_per_km2   double precision,
    cameras_by_level  jsonb NOT NULL,
    PRIMARY KEY (run_id, region_code)
);

CREATE TABLE coverage_proposals (
    run_id              uuid NOT NULL REFERENCES coverage_runs (id) ON DELETE CASCADE,
    rank                integer NOT NULL,
    lon                 double precision NOT NULL,
    lat                 double precision NOT NULL,
    site_kind           text NOT NULL CHECK (site_kind IN ('junction', 'village', 'cell')),
    region_code         text COLLATE "C" NOT NULL,
    newly_covered       integer NOT NULL,
    newly_cells         integer NOT NULL,
    newly_villages      integer NOT NULL,
    newly_junctions     integer NOT NULL,
    gain_weight         double precision NOT NULL,
    covered_share_after double precision NOT NULL,
    covers              jsonb NOT NULL,   -- names/ids of the villages and junctions it adds
    PRIMARY KEY (run_id, rank)
);
