"""Query parameters are merged into URLs, never appended: the embedded database's DSN already
has a query (`?host=…&port=…`), and a second `?` made its port `5432?search_path=…`."""

from __future__ import annotations

import ast

import asyncpg

from camera_registry.urls import with_query

from ..conftest import ROOT, schema_dsn


def test_search_path_joins_the_embedded_dsn_query_instead_of_a_second_question_mark() -> None:
    dsn = "postgresql://postgres@/postgres?host=/tmp/camreg-pg-1a2b&port=5432"
    assert with_query(dsn, search_path="t_one") == (
        "postgresql://postgres@/postgres?host=/tmp/camreg-pg-1a2b&port=5432&search_path=t_one"
    )


def test_a_url_without_a_query_gets_one() -> None:
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
    assert with_query(dsn, search_path="t_x") == dsn + "?search_path=t_x"


def test_a_given_key_replaces_the_urls_own_value_and_none_removes_it() -> None:
    url = "http://127.0.0.1:8080/live/a.flv?sign=old&keep=1&drop=2"
    assert (
        with_query(url, sign="new", drop=None) == "http://127.0.0.1:8080/live/a.flv?keep=1&sign=new"
    )


def test_values_are_quoted_so_a_socket_dir_with_a_space_survives() -> None:
    out = with_query("postgresql://postgres@/postgres", host="/tmp/my data", port=5432)
    assert out == "postgresql://postgres@/postgres?host=/tmp/my%20data&port=5432"


async def test_the_merged_dsn_reaches_the_schema_on_this_database(
    database_url: str, schema: str
) -> None:
    """Whichever database the suite runs on (the machine's or the embedded one), the DSN a
    `camreg` subprocess gets connects and lands in the module's schema."""
    conn = await asyncpg.connect(schema_dsn(database_url, schema))
    try:
        assert await conn.fetchval("SELECT current_schema()") == schema
    finally:
        await conn.close()


def test_no_source_appends_a_query_to_a_url_by_hand() -> None:
    """The old pattern (`f"{url}?search_path=…"`, or choosing "?" or "&") must not return."""
    offenders = []
    for folder in ("api", "camera_registry", "ingest", "health", "geo", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.JoinedStr):
                    text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
                    if "search_path=" in text:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if (
                    isinstance(node, ast.IfExp)
                    and isinstance(node.body, ast.Constant)
                    and node.body.value == "&"
                    and isinstance(node.orelse, ast.Constant)
                    and node.orelse.value == "?"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"use camera_registry.urls.with_query: {offenders}"
