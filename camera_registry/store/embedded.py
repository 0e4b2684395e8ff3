"""The embedded default database: a private PostgreSQL cluster under `<data_dir>/pg`.

Why our own manager rather than `pgserver.get_server`: every `camreg` process (serve, import,
token …) must share one cluster found through the data dir, start it when nobody has, and the
last one out must stop it, even if another process was killed. Kernel file locks give us that
reference count without pid files going stale: each user holds a shared `flock` on
`pg.users.lock`; a process that can take it exclusively is the last user.

Binaries come from the `pgserver` wheel (PostgreSQL 16, no system packages needed) or, failing
that, from the machine's own `pg_ctl`. PostgreSQL refuses to run as root, so as root the server
runs as an unprivileged OS user (`postgres` where it exists, else a `camreg-pg` system user).
The server listens on a Unix socket only: nothing else on the machine can reach it over TCP.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from camera_registry.errors import DatabaseUnavailable, EmbeddedDatabaseBusy
from camera_registry.urls import with_query

log = logging.getLogger(__name__)

PORT = 5432  # only names the socket file; the server does not listen on TCP
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux


def _pgserver_bin() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bin_dir if (bin_dir / "pg_ctl").exists() else None


def _system_bins() -> list[Path]:
    found: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "pg_ctl").exists():
            found.append(Path(d))
    return found


def _major(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[-1].split(".")[0]


def find_bin_dir(pgdata: Path) -> Path:
    """Binaries whose major version matches an existing cluster, preferring pgserver's."""
    candidates = [b for b in [_pgserver_bin(), *_system_bins()] if b is not None]
    if not candidates:
        raise DatabaseUnavailable(
            "no PostgreSQL binaries found: install the package with its dependencies "
            "(pip install -e .) so the pgserver wheel is present, or set CAMREG_DATABASE_URL"
        )
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        return candidates[0]
    want = version_file.read_text().strip()
    for b in candidates:
        if _major(b) == want:
            return b
    raise DatabaseUnavailable(
        f"the cluster in {pgdata} was made by PostgreSQL {want}, and no PostgreSQL {want} "
        f"binaries are installed here; install them or move {pgdata} aside"
    )


@dataclass(frozen=True, slots=True)
class Postmaster:
    pid: int
    socket_dir: str
    port: int
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 8:
            return None
        return cls(int(lines[0]), lines[4], int(lines[3]), lines[7].strip())

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "camreg-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "camreg-pg"],
        check=True,
        capture_output=True,
    )
    return "camreg-pg"


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach `path` (adds o+x to ancestors that lack it)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("granting o+x on %s so the database user can reach %s", parent, path)
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """One handle per process; `start()` returns a DSN, `stop()` releases (last user stops)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.root = self.pgdata.parent
        self._users: IO[bytes] | None = None
        self.started_here = False

    # -- locking -------------------------------------------------------------------------------
    def _lock(self, name: str, mode: int) -> IO[bytes]:
        fh = open(self.root / name, "a+b")  # noqa: SIM115 - lifetime is the lock's
        fcntl.flock(fh, mode)
        return fh

    def _socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{PORT}")) <= _SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        d = Path(tempfile.gettempdir()) / f"camreg-pg-{digest}"
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def dsn(self, pm: Postmaster, database: str = "postgres") -> str:
        return with_query(
            f"postgresql://postgres@/{database}", host=str(pm.socket_dir), port=pm.port
        )

    def _pg(self, bin_dir: Path, args: list[str], user: str | None, timeout: float) -> None:
        # Drop root's group too: with gid 0 the group bits (not "other") of root-owned
        # directories would apply, and those are usually closed.
        uid = gid = None
        groups: list[int] | None = None
        if user is not None:
            pw = pwd.getpwnam(user)
            uid, gid, groups = pw.pw_uid, pw.pw_gid, []
        proc = subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if proc.returncode != 0:
            log_file = self.root / f"{self.pgdata.name}.log"
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise DatabaseUnavailable(
                f"{args[0]} failed for the embedded database in {self.pgdata}: "
                f"{proc.stderr.strip() or proc.stdout.strip()}\n{tail}".rstrip()
            )

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._users is None:
            self._users = self._lock(f"{self.pgdata.name}.users.lock", fcntl.LOCK_SH)
        with self._lock(f"{self.pgdata.name}.start.lock", fcntl.LOCK_EX):
            pm = Postmaster.read(self.pgdata)
            if pm is not None and pm.alive():
                if pm.status != "ready":
                    self._wait_ready(timeout)
                return self.dsn(Postmaster.read(self.pgdata) or pm)
            self._start_server(timeout)
            self.started_here = True
            pm = Postmaster.read(self.pgdata)
            assert pm is not None
            return self.dsn(pm)

    def _start_server(self, timeout: float) -> None:
        user = _run_as()
        bin_dir = find_bin_dir(self.pgdata)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        socket_dir = self._socket_dir()
        log_file = self.root / f"{self.pgdata.name}.log"
        log_file.touch()
        if user is not None:
            pw = pwd.getpwnam(user)
            _make_traversable(self.root)
            _make_traversable(bin_dir)
            for p in (self.pgdata, socket_dir, log_file):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        if fresh:
            log.info("creating the embedded PostgreSQL cluster in %s", self.pgdata)
            self._pg(
                bin_dir,
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                user,
                timeout,
            )
        opts = f"-c listen_addresses='' -k {socket_dir} -p {PORT}"
        self._pg(
            bin_dir,
            [
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(log_file),
                "-o",
                opts,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            user,
            timeout + 5,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pm = Postmaster.read(self.pgdata)
            if pm is not None and pm.alive() and pm.status == "ready":
                return
            time.sleep(0.1)
        raise DatabaseUnavailable(f"the embedded database in {self.pgdata} did not become ready")

    def stop(self) -> bool:
        """Release this process's use; stop the server if nobody else uses it. True if stopped."""
        if self._users is None:
            return False
        with self._lock(f"{self.pgdata.name}.start.lock", fcntl.LOCK_EX):
            fcntl.flock(self._users, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._users.close()
                self._users = None
                return False  # another camreg process still uses the cluster
            try:
                pm = Postmaster.read(self.pgdata)
                if pm is None or not pm.alive():
                    return False
                bin_dir = find_bin_dir(self.pgdata)
                user = _run_as()
                if user is not None:
                    # an ancestor may have lost o+x since the start (a temp-dir cleaner, or a
                    # test runner resetting its root to 0700): pg_ctl must still reach the data
                    _make_traversable(self.root)
                self._pg(
                    bin_dir,
                    ["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                    user,
                    60,
                )
                return True
            finally:
                self._users.close()
                self._users = None


class ServeLock:
    """Refuses a second `camreg serve` on the same data dir, naming the one already running."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held for the server's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise EmbeddedDatabaseBusy(
                f"camreg serve is already running on data dir {self.path.parent} ({holder}); "
                "stop it first, or give this one its own CAMREG_DATA_DIR"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
