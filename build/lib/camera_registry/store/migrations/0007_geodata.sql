-- Planning geodata for coverage (农村覆盖、城市加密): region boundaries, villages, road
-- junctions and built-up areas, as a planner has them. No PostGIS (DESIGN.md §1): shapes are
-- WKB in WGS-84 lon/lat, read by geo/ with shapely; a `box`/`point` with a GiST index answers
-- "what lies in this region or viewport" in SQL. Every row remembers the data set it came from
-- (`source`), so loading a file again replaces that data set and nothing else.

CREATE TABLE geo_regions (
    adcode     text COLLATE "C" PRIMARY KEY CHECK (adcode ~ '^[0-9]{6}$'),
    name       text NOT NULL,
    parent     text COLLATE "C",                        -- the enclosing region's adcode
    rank       text NOT NULL CHECK (rank IN ('province', 'city', 'county')),
    boundary   bytea NOT NULL,                           -- WKB (Multi)Polygon, valid, WGS-84
    bbox       box NOT NULL,                             -- (lon, lat) extent of the boundary
    area_km2   double precision NOT NULL CHECK (area_km2 > 0),
    source     text NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geo_regions_bbox ON geo_regions USING gist (bbox);
CREATE INDEX geo_regions_parent ON geo_regions (parent);

CREATE TABLE geo_villages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_code text COLLATE "C" CHECK (region_code ~ '^[0-9]{6}$'),  -- county holding it
    name        text,
    lon         double precision NOT NULL,               -- entrance / representative point
    lat         double precision NOT NULL,
    geom        point GENERATED ALWAYS AS (point(lon, lat)) STORED,
    outline     bytea,                                   -- WKB polygon when the source has one
    population  integer CHECK (population IS NULL OR population >= 0),
    source      text NOT NULL
);
CREATE INDEX geo_villages_geom ON geo_villages USING gist (geom);
CREATE INDEX geo_villages_region ON geo_villages (region_code);

CREATE TABLE geo_junctions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_code text COLLATE "C" CHECK (region_code ~ '^[0-9]{6}$'),
    name        text,
    kind        text NOT NULL DEFAULT 'junction'          -- 'trunk': a checkpoint junction
                CHECK (kind IN ('junction', 'trunk')),
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    geom        point GENERATED ALWAYS AS (point(lon, lat)) STORED,
    weight      real CHECK (weight IS NULL OR weight >= 0),
    source      text NOT NULL
);
CREATE INDEX geo_junctions_geom ON geo_junctions USING gist (geom);
CREATE INDEX geo_junctions_region ON geo_junctions (region_code);

CREATE TABLE geo_builtup (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_code text COLLATE "C" CHECK (region_code ~ '^[0-9]{6}$'),
    name        text,
    outline     bytea NOT NULL,                          -- WKB (Multi)Polygon, valid, WGS-84
    bbox        box NOT NULL,
    source      text NOT NULL
);
CREATE INDEX geo_builtup_bbox ON geo_builtup USING gist (bbox);
CREATE INDEX geo_builtup_region ON geo_builtup (region_code);

-- One row per loaded data set: what coverage runs compare to know their inputs are unchanged.
CREATE TABLE geo_datasets (
    source     text COLLATE "C" NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('regions', 'villages', 'junctions', 'builtup')),
    features   integer NOT NULL,
    checksum   text NOT NULL,                            -- sha256 of the file as loaded
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, source)
);
