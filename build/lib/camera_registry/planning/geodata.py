"""Planning geodata in the database (migration 0007): regions, villages, junctions, built-up.

All SQL for these tables lives here, so the loader (`ingest/geodata.py`), the demo, the API and
the coverage runs share one reading of the table contract. Shapes travel as WKB and come back
as shapely geometries; point sets come back as numpy arrays (one element per row, stable `id`
order), because coverage works on arrays and never on row objects.

Loading a data set again replaces it: every `replace_*` deletes the rows of that `source` and
inserts the new ones in one transaction, then records the file's checksum in `geo_datasets`, so
a coverage run can tell whether its inputs changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import asyncpg
import numpy as np
import shapely
from numpy.typing import NDArray

from geo.project import LocalProjection

Rank = Literal["province", "city", "county"]
Kind = Literal["regions", "villages", "junctions", "builtup"]
KINDS: tuple[Kind, ...] = ("regions", "villages", "junctions", "builtup")
RANKS: tuple[Rank, ...] = ("province", "city", "county")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
ObjArray = NDArray[np.object_]
# A pool or a connection: both have fetch/execute; asyncpg is untyped, so this is for readers.
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
BBox = tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max (WGS-84)


def rank_of(adcode: str) -> Rank:
    """GB/T 2260: xx0000 is a province, xxxx00 a prefecture city, anything else a county."""
    if adcode.endswith("0000"):
        return "province"
    if adcode.endswith("00"):
        return "city"
    return "county"


def parent_of(adcode: str) -> str | None:
    """The enclosing region's code by the GB/T 2260 digit layout (None for a province)."""
    rank = rank_of(adcode)
    if rank == "province":
        return None
    if rank == "city":
        return adcode[:2] + "0000"
    return adcode[:4] + "00"


def areas_km2(geoms: Any) -> FloatArray:
    """Equal-area areas (km²) of WGS-84 polygons, one projection for the whole array.

    Lambert azimuthal equal-area keeps area exactly at any distance from its centre, so one
    projection centred on the data serves a whole province without a loop over polygons.
    """
    arr = np.asarray(geoms, dtype=object)
    if arr.size == 0:
        return np.zeros(0)
    x0, y0, x1, y1 = shapely.total_bounds(arr).tolist()
    proj = LocalProjection((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    return np.asarray(shapely.area(proj.forward_geometry(arr)) / 1e6, dtype=np.float64)


def _objects(values: Sequence[object]) -> ObjArray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


@dataclass(frozen=True, eq=False)
class RegionRow:
    """One administrative region; `boundary` is a valid WGS-84 (Multi)Polygon."""

    adcode: str
    name: str
    parent: str | None
    rank: Rank
    boundary: shapely.Geometry
    area_km2: float
    source: str = ""


@dataclass(frozen=True, eq=False)
class Villages:
    """Villages as parallel arrays; `population` is NaN where unknown, `id` 0 before loading.

    `outline` holds a WKB polygon per village where the source had one (else None); the
    point (`lon`, `lat`) is the entrance or representative point coverage tests against.
    """

    lon: FloatArray
    lat: FloatArray
    region_code: ObjArray  # str or None (outside every loaded county)
    name: ObjArray  # str or None
    population: FloatArray
    id: IntArray
    outline: ObjArray  # bytes or None

    def __len__(self) -> int:
        return len(self.lon)

    @classmethod
    def build(
        cls,
        lon: Any,
        lat: Any,
        region_code: Sequence[str | None] | ObjArray,
        name: Sequence[str | None] | ObjArray | None = None,
        population: Any = None,
        outline: Sequence[bytes | None] | ObjArray | None = None,
        id: Any = None,
    ) -> Villages:
        lon_a = np.asarray(lon, dtype=np.float64)
        n = len(lon_a)
        return cls(
            lon=lon_a,
            lat=np.asarray(lat, dtype=np.float64),
            region_code=_objects(list(region_code)),
            name=_objects([None] * n if name is None else list(name)),
            population=np.full(n, np.nan)
            if population is None
            else np.asarray(population, dtype=np.float64),
            id=np.zeros(n, dtype=np.int64) if id is None else np.asarray(id, dtype=np.int64),
            outline=_objects([None] * n if outline is None else list(outline)),
        )


@dataclass(frozen=True, eq=False)
class Junctions:
    """Road junctions as parallel arrays; `kind` is 'junction' or 'trunk' (a checkpoint)."""

    lon: FloatArray
    lat: FloatArray
    region_code: ObjArray
    name: ObjArray
    kind: ObjArray
    weight: FloatArray  # NaN where not given
    id: IntArray

    def __len__(self) -> int:
        return len(self.lon)

    @classmethod
    def build(
        cls,
        lon: Any,
        lat: Any,
        region_code: Sequence[str | None] | ObjArray,
        kind: Sequence[str] | ObjArray | None = None,
        weight: Any = None,
        name: Sequence[str | None] | ObjArray | None = None,
        id: Any = None,
    ) -> Junctions:
        lon_a = np.asarray(lon, dtype=np.float64)
        n = len(lon_a)
        return cls(
            lon=lon_a,
            lat=np.asarray(lat, dtype=np.float64),
            region_code=_objects(list(region_code)),
            name=_objects([None] * n if name is None else list(name)),
            kind=_objects(["junction"] * n if kind is None else list(kind)),
            weight=np.full(n, np.nan) if weight is None else np.asarray(weight, dtype=np.float64),
            id=np.zeros(n, dtype=np.int64) if id is None else np.asarray(id, dtype=np.int64),
        )


@dataclass(frozen=True, eq=False)
class Builtup:
    """Built-up polygons (urban zones drawn by the planner) with their county, if any."""

    outline: ObjArray  # shapely (Multi)Polygons, WGS-84
    region_code: ObjArray
    name: ObjArray
    id: IntArray

    def __len__(self) -> int:
        return len(self.outline)


@dataclass(frozen=True)
class DatasetRow:
    source: str
    kind: str
    features: int
    checksum: str
    loaded_at: dt.datetime


# -- writing -------------------------------------------------------------------------------------
def _none_if_nan(values: FloatArray, cast: type) -> list[Any]:
    return [None if v != v else cast(v) for v in values.tolist()]


def _box(geoms: Any) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    b = shapely.bounds(np.asarray(geoms, dtype=object))
    return [((x1, y1), (x0, y0)) for x0, y0, x1, y1 in b.tolist()]


async def _lock(conn: asyncpg.Connection, kind: Kind, source: str) -> None:
    """Serialise loads of one data set: two concurrent loads would otherwise both delete
    nothing and both insert, leaving the set twice. Held until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('geodata:' || $1 || ':' || $2))", kind, source
    )


async def _record(conn: Conn, kind: Kind, source: str, features: int, checksum: str) -> None:
    await conn.execute(
        """INSERT INTO geo_datasets (source, kind, features, checksum) VALUES ($1, $2, $3, $4)
           ON CONFLICT (kind, source) DO UPDATE
           SET features = EXCLUDED.features, checksum = EXCLUDED.checksum, loaded_at = now()""",
        source,
        kind,
        features,
        checksum,
    )


async def replace_regions(
    conn: asyncpg.Connection, source: str, rows: Sequence[RegionRow], checksum: str
) -> None:
    """Replace data set `source` with `rows`; a region another data set holds moves here.

    Boundaries are keyed by adcode, so loading a better file for the same counties takes them
    over; the data set that lost rows gets its feature count updated and a new `loaded_at`, so
    runs that used it see a change.
    """
    codes = [r.adcode for r in rows]
    async with conn.transaction():
        await _lock(conn, "regions", source)
        losers = await conn.fetch(
            """SELECT DISTINCT source FROM geo_regions
               WHERE adcode = ANY($1::text[]) AND source <> $2""",
            codes,
            source,
        )
        await conn.execute(
            "DELETE FROM geo_regions WHERE source = $1 OR adcode = ANY($2::text[])", source, codes
        )
        geoms = [r.boundary for r in rows]
        wkb = shapely.to_wkb(np.asarray(geoms, dtype=object)) if rows else []
        await conn.copy_records_to_table(
            "geo_regions",
            columns=("adcode", "name", "parent", "rank", "boundary", "bbox", "area_km2", "source"),
            records=[
                (r.adcode, r.name, r.parent, r.rank, w, b, float(r.area_km2), source)
                for r, w, b in zip(rows, wkb, _box(geoms) if rows else [], strict=True)
            ],
        )
        for loser in losers:
            await conn.execute(
                """UPDATE geo_datasets SET loaded_at = now(),
                   features = (SELECT count(*) FROM geo_regions WHERE source = $1)
                   WHERE kind = 'regions' AND source = $1""",
                loser["source"],
            )
        await _record(conn, "regions", source, len(rows), checksum)


async def _replace_points_or_shapes(
    conn: asyncpg.Connection,
    kind: Kind,
    source: str,
    columns: tuple[str, ...],
    records: Iterable[tuple[Any, ...]],
    count: int,
    checksum: str,
) -> None:
    """Replace data set `source` of one kind in one transaction: delete it, COPY the new rows,
    record the checksum. The per-set lock keeps two loads of one file from doubling it."""
    async with conn.transaction():
        await _lock(conn, kind, source)
        await conn.execute(f"DELETE FROM geo_{kind} WHERE source = $1", source)
        await conn.copy_records_to_table(f"geo_{kind}", columns=columns, records=records)
        await _record(conn, kind, source, count, checksum)


async def replace_villages(
    conn: asyncpg.Connection, source: str, v: Villages, checksum: str
) -> None:
    """Replace data set `source` with the villages in `v`, in one transaction."""
    records = zip(
        v.region_code.tolist(),
        v.name.tolist(),
        v.lon.tolist(),
        v.lat.tolist(),
        v.outline.tolist(),
        _none_if_nan(v.population, int),
        [source] * len(v),
        strict=True,
    )
    columns = ("region_code", "name", "lon", "lat", "outline", "population", "source")
    await _replace_points_or_shapes(conn, "villages", source, columns, records, len(v), checksum)


async def replace_junctions(
    conn: asyncpg.Connection, source: str, j: Junctions, checksum: str
) -> None:
    """Replace data set `source` with the junctions in `j`, in one transaction."""
    records = zip(
        j.region_code.tolist(),
        j.name.tolist(),
        j.kind.tolist(),
        j.lon.tolist(),
        j.lat.tolist(),
        _none_if_nan(j.weight, float),
        [source] * len(j),
        strict=True,
    )
    columns = ("region_code", "name", "kind", "lon", "lat", "weight", "source")
    await _replace_points_or_shapes(conn, "junctions", source, columns, records, len(j), checksum)


async def replace_builtup(conn: asyncpg.Connection, source: str, b: Builtup, checksum: str) -> None:
    """Replace data set `source` with the built-up polygons in `b`, in one transaction."""
    records = zip(
        b.region_code.tolist(),
        b.name.tolist(),
        shapely.to_wkb(b.outline).tolist() if len(b) else [],
        _box(b.outline) if len(b) else [],
        [source] * len(b),
        strict=True,
    )
    columns = ("region_code", "name", "outline", "bbox", "source")
    await _replace_points_or_shapes(conn, "builtup", source, columns, records, len(b), checksum)


# -- reading -------------------------------------------------------------------------------------
def _bbox_arg(bbox: BBox | None) -> Any:
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    return ((x1, y1), (x0, y0))


async def regions(
    conn: Conn,
    prefix: str = "",
    *,
    rank: Rank | None = None,
    parent: str | None = None,
    bbox: BBox | None = None,
) -> list[RegionRow]:
    """Regions whose adcode starts with `prefix` ('' = all), in adcode order."""
    rows = await conn.fetch(
        """SELECT adcode, name, parent, rank, boundary, area_km2, source FROM geo_regions
           WHERE adcode LIKE $1 || '%'
             AND ($2::text IS NULL OR rank = $2)
             AND ($3::text IS NULL OR parent = $3)
             AND ($4::box IS NULL OR bbox && $4::box)
           ORDER BY adcode""",
        prefix,
        rank,
        parent,
        _bbox_arg(bbox),
    )
    if not rows:
        return []
    geoms = shapely.from_wkb([r["boundary"] for r in rows])
    return [
        RegionRow(
            adcode=r["adcode"],
            name=r["name"],
            parent=r["parent"],
            rank=r["rank"],
            boundary=g,
            area_km2=r["area_km2"],
            source=r["source"],
        )
        for r, g in zip(rows, geoms, strict=True)
    ]


async def region_at(conn: Conn, lon: float, lat: float, prefix: str = "") -> RegionRow | None:
    """The finest loaded region under `prefix` whose boundary contains the point (a county
    before its city, a city before the province); None when no boundary does.

    The bbox index narrows to a handful of candidates; the exact test is shapely's."""
    rows = await conn.fetch(
        """SELECT adcode, name, parent, rank, boundary, area_km2, source FROM geo_regions
           WHERE adcode LIKE $1 || '%' AND bbox @> point($2, $3)""",
        prefix,
        lon,
        lat,
    )
    finest = {"county": 0, "city": 1, "province": 2}
    for r in sorted(rows, key=lambda r: (finest.get(r["rank"], 3), r["adcode"])):
        shape = shapely.from_wkb(r["boundary"])
        if shapely.intersects_xy(shape, lon, lat):
            return RegionRow(
                adcode=r["adcode"],
                name=r["name"],
                parent=r["parent"],
                rank=r["rank"],
                boundary=shape,
                area_km2=r["area_km2"],
                source=r["source"],
            )
    return None


# '' selects every row, also those outside every county (region_code NULL); a prefix never does.
_POINT_WHERE = """($1 = '' OR region_code LIKE $1 || '%')
                   AND ($2::box IS NULL OR geom <@ $2::box)"""


async def villages_in(
    conn: Conn, region_prefix: str = "", *, bbox: BBox | None = None, limit: int | None = None
) -> Villages:
    """Villages in counties under `region_prefix` ('' = all, including unassigned ones).

    Ordered by id, so the same data gives the same arrays (coverage results are reproducible).
    """
    rows = await conn.fetch(
        f"""SELECT id, region_code, name, lon, lat, outline, population FROM geo_villages
            WHERE {_POINT_WHERE} ORDER BY id LIMIT $3""",
        region_prefix,
        _bbox_arg(bbox),
        limit,
    )
    return Villages.build(
        lon=[r["lon"] for r in rows],
        lat=[r["lat"] for r in rows],
        region_code=[r["region_code"] for r in rows],
        name=[r["name"] for r in rows],
        population=[np.nan if r["population"] is None else r["population"] for r in rows],
        outline=[r["outline"] for r in rows],
        id=[r["id"] for r in rows],
    )


async def junctions_in(
    conn: Conn, region_prefix: str = "", *, bbox: BBox | None = None, limit: int | None = None
) -> Junctions:
    """Junctions in counties under `region_prefix` ('' = all), ordered by id."""
    rows = await conn.fetch(
        f"""SELECT id, region_code, name, kind, lon, lat, weight FROM geo_junctions
            WHERE {_POINT_WHERE} ORDER BY id LIMIT $3""",
        region_prefix,
        _bbox_arg(bbox),
        limit,
    )
    return Junctions.build(
        lon=[r["lon"] for r in rows],
        lat=[r["lat"] for r in rows],
        region_code=[r["region_code"] for r in rows],
        kind=[r["kind"] for r in rows],
        weight=[np.nan if r["weight"] is None else r["weight"] for r in rows],
        name=[r["name"] for r in rows],
        id=[r["id"] for r in rows],
    )


async def builtup_in(conn: Conn, region_prefix: str = "", *, bbox: BBox | None = None) -> Builtup:
    """Built-up polygons in counties under `region_prefix` ('' = all), ordered by id."""
    rows = await conn.fetch(
        """SELECT id, region_code, name, outline FROM geo_builtup
           WHERE ($1 = '' OR region_code LIKE $1 || '%')
             AND ($2::box IS NULL OR bbox && $2::box)
           ORDER BY id""",
        region_prefix,
        _bbox_arg(bbox),
    )
    return Builtup(
        outline=_objects(list(shapely.from_wkb([r["outline"] for r in rows])) if rows else []),
        region_code=_objects([r["region_code"] for r in rows]),
        name=_objects([r["name"] for r in rows]),
        id=np.asarray([r["id"] for r in rows], dtype=np.int64),
    )


async def datasets(conn: Conn) -> list[DatasetRow]:
    """Every loaded data set, by kind then source."""
    rows = await conn.fetch(
        "SELECT source, kind, features, checksum, loaded_at FROM geo_datasets ORDER BY kind, source"
    )
    return [DatasetRow(**dict(r)) for r in rows]


async def has_regions(conn: Conn) -> bool:
    """Whether any boundary is loaded (the demo loads its own only into an empty table)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM geo_regions)"))
