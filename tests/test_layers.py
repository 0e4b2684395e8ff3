"""The layering rule, kept by walking the source: imports point down only.

api → ingest / health → camera_registry → geo. `ingest` and `health` are siblings and do not
import each other; `geo` is pure (numpy, shapely, pyproj, scipy and the standard library).
There is no list of exceptions: an import that points up fails here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RANK = {"api": 3, "ingest": 2, "health": 2, "camera_registry": 1, "geo": 0}
GEO_MAY_IMPORT = {"numpy", "shapely", "pyproj", "scipy", "geo"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path`, relative ones resolved."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            out.append((node.lineno, module))
    return out


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "static" not in p.parts)


def layer_violations() -> list[str]:
    bad = []
    for package, rank in RANK.items():
        for path in _sources(package):
            for line, module in _imports(path):
                top = module.split(".")[0]
                where = f"{path.relative_to(ROOT)}:{line} imports {module}"
                if top in RANK and top != package and RANK[top] >= rank:
                    bad.append(where)
                elif package == "geo" and top not in GEO_MAY_IMPORT | sys.stdlib_module_names:
                    bad.append(where + " (geo/ is pure)")
    return bad


def test_every_import_points_down_the_layers() -> None:
    assert layer_violations() == []


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        ("camera_registry", "from api.app import create_app\n", "imports api.app"),
        ("camera_registry", "import ingest.ledger.read\n", "imports ingest.ledger.read"),
        ("health", "from ingest.errors import IngestError\n", "imports ingest.errors"),
        ("geo", "import asyncpg\n", "(geo/ is pure)"),
    ],
)
def test_an_upward_or_sideways_import_is_caught(
    package: str, source: str, expected: str, tmp_path: Path
) -> None:
    planted = ROOT / package / f"_planted_{tmp_path.name}.py"
    planted.write_text(source, encoding="utf-8")
    try:
        assert any(expected in v for v in layer_violations())
    finally:
        planted.unlink()


def test_relative_imports_resolve_to_their_package() -> None:
    path = ROOT / "camera_registry" / "store" / "cameras.py"
    assert all(m.split(".")[0] != "" for _, m in _imports(path))
