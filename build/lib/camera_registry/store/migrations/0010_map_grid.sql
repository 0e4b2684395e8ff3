-- The web map's pre-aggregated grid: camera counts per grid cell × region × level × status,
-- at three cell sizes (tiers), so a viewport at any zoom sums a few thousand rows instead of
-- scanning millions of cameras. Kept exact by statement-level triggers with transition tables:
-- one set-based upsert per INSERT/UPDATE/DELETE statement, so a 2.4-million-row import pays
-- one GROUP BY per chunk, and a single status change touches eight rows.
--
-- tier 0: 0.005° cells (~500 m), 1: 0.02° (~2 km), 2: 0.1° (~10 km), 3: 0.5° (~50 km).
-- cx = floor(lon / size), cy = floor(lat / size); sum_lon/sum_lat give cluster centroids.

CREATE TABLE map_grid (
    tier         smallint NOT NULL,
    cx           integer NOT NULL,
    cy           integer NOT NULL,
    region_code  text COLLATE "C" NOT NULL,
    level        smallint NOT NULL,
    status       text NOT NULL,
    n            integer NOT NULL,
    sum_lon      double precision NOT NULL,
    sum_lat      double precision NOT NULL,
    PRIMARY KEY (tier, cx, cy, region_code, level, status)
);

CREATE FUNCTION map_grid_tiers() RETURNS TABLE (tier smallint, size double precision)
LANGUAGE sql IMMUTABLE AS $$
    VALUES (0::smallint, 0.005::double precision), (1::smallint, 0.02), (2::smallint, 0.1),
           (3::smallint, 0.5)
$$;

-- Rows a change leaves at n = 0 are deleted by primary key in the same trigger: the upsert
-- returns them (a `WHERE n <= 0` scan would walk every dead index entry of a busy table).
CREATE FUNCTION map_grid_drop(keys map_grid[]) RETURNS void LANGUAGE sql AS $$
    DELETE FROM map_grid g
     USING unnest(keys) AS k
     WHERE (g.tier, g.cx, g.cy, g.region_code, g.level, g.status)
         = (k.tier, k.cx, k.cy, k.region_code, k.level, k.status)
       AND g.n <= 0
$$;

CREATE FUNCTION map_grid_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO map_grid AS g (tier, cx, cy, region_code, level, status, n, sum_lon, sum_lat)
    SELECT t.tier, floor(c.lon / t.size)::integer, floor(c.lat / t.size)::integer,
           c.region_code, c.level, c.status, count(*), sum(c.lon), sum(c.lat)
      FROM new_cameras c CROSS JOIN map_grid_tiers() t
     WHERE c.lon IS NOT NULL
     GROUP BY 1, 2, 3, 4, 5, 6
     ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (tier, cx, cy, region_code, level, status) DO UPDATE
       SET n = g.n + EXCLUDED.n, sum_lon = g.sum_lon + EXCLUDED.sum_lon,
           sum_lat = g.sum_lat + EXCLUDED.sum_lat;
    RETURN NULL;
END $$;

CREATE FUNCTION map_grid_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    empty map_grid[];
BEGIN
    WITH gone AS (
        SELECT t.tier, floor(c.lon / t.size)::integer AS cx, floor(c.lat / t.size)::integer AS cy,
               c.region_code, c.level, c.status, count(*) AS n, sum(c.lon) AS sum_lon,
               sum(c.lat) AS sum_lat
          FROM old_cameras c CROSS JOIN map_grid_tiers() t
         WHERE c.lon IS NOT NULL
         GROUP BY 1, 2, 3, 4, 5, 6
    ), up AS (
        UPDATE map_grid g SET n = g.n - gone.n, sum_lon = g.sum_lon - gone.sum_lon,
                              sum_lat = g.sum_lat - gone.sum_lat
          FROM gone
         WHERE (g.tier, g.cx, g.cy, g.region_code, g.level, g.status)
             = (gone.tier, gone.cx, gone.cy, gone.region_code, gone.level, gone.status)
        RETURNING g.*
    )
    SELECT array_agg(ROW(up.tier, up.cx, up.cy, up.region_code, up.level, up.status, up.n,
                         up.sum_lon, up.sum_lat)::map_grid)
      INTO empty FROM up WHERE up.n <= 0;
    IF empty IS NOT NULL THEN
        PERFORM map_grid_drop(empty);
    END IF;
    RETURN NULL;
END $$;

-- UPDATE: transition tables cannot be combined with a column list (UPDATE OF …), so the
-- function itself keeps only the rows whose map-relevant columns changed.
CREATE FUNCTION map_grid_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    empty map_grid[];
BEGIN
    WITH moved AS (
        SELECT o.lon AS olon, o.lat AS olat, o.region_code AS oreg, o.level AS olev,
               o.status AS ost, n.lon, n.lat, n.region_code, n.level, n.status
          FROM old_cameras o JOIN new_cameras n USING (id)
         WHERE (o.lon, o.lat, o.region_code, o.level, o.status)
               IS DISTINCT FROM (n.lon, n.lat, n.region_code, n.level, n.status)
    ), d AS (
        SELECT olon AS lon, olat AS lat, oreg AS region_code, olev AS level, ost AS status,
               -1 AS sign
          FROM moved
        UNION ALL
        SELECT lon, lat, region_code, level, status, 1 FROM moved
    ), up AS (
        INSERT INTO map_grid AS g (tier, cx, cy, region_code, level, status, n, sum_lon, sum_lat)
        SELECT t.tier, floor(d.lon / t.size)::integer, floor(d.lat / t.size)::integer,
               d.region_code, d.level, d.status, sum(d.sign), sum(d.sign * d.lon),
               sum(d.sign * d.lat)
          FROM d CROSS JOIN map_grid_tiers() t
         WHERE d.lon IS NOT NULL
         GROUP BY 1, 2, 3, 4, 5, 6
        HAVING sum(d.sign) <> 0 OR sum(d.sign * d.lon) <> 0 OR sum(d.sign * d.lat) <> 0
         ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (tier, cx, cy, region_code, level, status) DO UPDATE
           SET n = g.n + EXCLUDED.n, sum_lon = g.sum_lon + EXCLUDED.sum_lon,
               sum_lat = g.sum_lat + EXCLUDED.sum_lat
        RETURNING g.*
    )
    SELECT array_agg(ROW(up.tier, up.cx, up.cy, up.region_code, up.level, up.status, up.n,
                         up.sum_lon, up.sum_lat)::map_grid)
      INTO empty FROM up WHERE up.n <= 0;
    IF empty IS NOT NULL THEN
        PERFORM map_grid_drop(empty);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION map_grid_on_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM map_grid;
    RETURN NULL;
END $$;

CREATE TRIGGER cameras_map_grid_insert AFTER INSERT ON cameras
    REFERENCING NEW TABLE AS new_cameras FOR EACH STATEMENT
    EXECUTE FUNCTION map_grid_on_insert();
CREATE TRIGGER cameras_map_grid_update AFTER UPDATE ON cameras
    REFERENCING OLD TABLE AS old_cameras NEW TABLE AS new_cameras FOR EACH STATEMENT
    EXECUTE FUNCTION map_grid_on_update();
CREATE TRIGGER cameras_map_grid_delete AFTER DELETE ON cameras
    REFERENCING OLD TABLE AS old_cameras FOR EACH STATEMENT
    EXECUTE FUNCTION map_grid_on_delete();
CREATE TRIGGER cameras_map_grid_truncate AFTER TRUNCATE ON cameras
    FOR EACH STATEMENT EXECUTE FUNCTION map_grid_on_truncate();

-- Cameras registered before this migration.
INSERT INTO map_grid (tier, cx, cy, region_code, level, status, n, sum_lon, sum_lat)
SELECT t.tier, floor(c.lon / t.size)::integer, floor(c.lat / t.size)::integer,
       c.region_code, c.level, c.status, count(*), sum(c.lon), sum(c.lat)
  FROM cameras c CROSS JOIN map_grid_tiers() t
 WHERE c.lon IS NOT NULL
 GROUP BY 1, 2, 3, 4, 5, 6;
