"""CI proves both database paths: the suite on the machine's PostgreSQL, and every test that
builds a database URL or starts a server again on the embedded one (a fresh clone's path),
where three tests once failed because they appended `?search_path=` to a DSN with a query."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_ci_runs_the_url_and_server_tests_again_on_the_embedded_database() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'make test PYTEST_ARGS="${PYTEST_ARGS:--q}"' in script
    assert 'env -u CAMREG_TEST_DATABASE_URL make test PYTEST_ARGS="-q -m embedded_db"' in script


def test_the_embedded_subset_holds_every_test_that_builds_a_url_or_starts_a_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "embedded_db",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    modules = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    assert {
        "tests/camera_registry/test_heartbeats.py",  # the three that failed on a fresh clone
        "tests/camera_registry/test_coverage_run.py",
        "tests/camera_registry/test_urls.py",
        "tests/camera_registry/test_embedded.py",
        "tests/ingest/test_import.py",  # camreg subprocesses
        "tests/ingest/test_discover.py",
        "tests/web/test_map_page.py",  # a live camreg serve
        "tests/web/test_map_tiles.py",
        "tests/web/test_first_hour.py",
        "tests/api/cascade/test_catalog_items.py",  # SIPp as the upper platform
        "tests/api/cascade/test_sipp_upper_platform.py",
        "tests/api/cascade/test_city_to_province.py",  # two apps under TestServer
        "tests/api/test_gb28181_api.py",  # SIPp as the device
        "tests/api/test_gb28181_inbox.py",
    } <= modules
    assert "tests/geo/test_crs.py" not in modules  # pure code needs no second run
    assert "tests/test_embedded_build.py" not in modules
