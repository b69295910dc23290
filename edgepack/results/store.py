"""The results history: every bench result, kept in one SQLite database.

The default database is ``<user data dir>/history.sqlite3`` (``~/.local/share/edgepack/`` on
Linux); every function takes another file. One row per measurement (a *run*): the device, the
target, the bundle's sha256 (of its manifest, which hashes every file), a summary of the
manifest, the whole agent report as JSON, the time, and the edgepack version that stored it.

Durability: the database is in WAL mode with ``synchronous=FULL`` and every write is one
transaction, so a process killed in the middle of a write leaves the database as it was before
that write, and every run stored before it is intact. Readers and several writers (a fleet
bench stores from several threads) wait for each other through SQLite's busy timeout.

Schema versions: ``PRAGMA user_version`` holds the schema version. Opening a database applies
the migrations it has not seen yet, in order, each in its own transaction; a database written by
a newer edgepack (a version this code does not know) is refused rather than guessed at.

Run ids are SQLite integer ids, shown as ``#12``. Where a RUN is asked for, ``12``, ``#12``,
``last`` (the newest run) and ``last~N`` (N runs before the newest) are understood.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from edgepack._version import __version__
from edgepack.errors import EdgepackError
from edgepack.results.records import RunRecord, manifest_summary

if TYPE_CHECKING:
    from edgepack.agent.protocol import AgentReport
    from edgepack.bundle import Manifest

DB_NAME = "history.sqlite3"
BUSY_TIMEOUT_S = 30.0


class ResultsError(EdgepackError):
    """The results history cannot be read or written, or a run asked for is not in it."""


def default_db_path() -> Path:
    """Return the default history database, ``<user data dir>/history.sqlite3`` (it may not exist yet)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("edgepack")) / DB_NAME


# -- schema ---------------------------------------------------------------------------------

def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE runs (
            id               INTEGER PRIMARY KEY AUTOINCREMENT,
            created          TEXT NOT NULL,     -- ISO 8601, UTC, when the run was stored
            device           TEXT NOT NULL,
            target           TEXT NOT NULL,
            format           TEXT NOT NULL,
            precision        TEXT NOT NULL,
            bundle_sha256    TEXT NOT NULL,     -- sha256 of manifest.json (which hashes every file)
            bundle_path      TEXT NOT NULL,
            manifest         TEXT NOT NULL,     -- JSON: `manifest_summary`
            report           TEXT NOT NULL,     -- JSON: the whole agent report
            passed           INTEGER NOT NULL,  -- 1 when no budget was missed
            budget_failures  TEXT NOT NULL,     -- JSON list of strings
            seconds          TEXT NOT NULL,     -- JSON: connect, push, run, total
            edgepack_version TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX runs_target_device ON runs (target, device)")


def _v2(conn: sqlite3.Connection) -> None:
    # JSON {"study", "number"} for the bench of an `edgepack tune` trial; NULL for any other bench.
    conn.execute("ALTER TABLE runs ADD COLUMN trial TEXT")


# MIGRATIONS[i] takes a database from schema version i to i + 1. Append; never edit a shipped one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2]


def schema_version() -> int:
    """Return the schema version this edgepack writes."""
    return len(MIGRATIONS)


# -- the store ------------------------------------------------------------------------------

_COLUMNS = (
    "id, created, device, target, format, precision, bundle_sha256, bundle_path, manifest, report, "
    "passed, budget_failures, seconds, edgepack_version, trial"
)
MAX_ID = 2**63 - 1  # SQLite's largest integer: a run id or count past it names no run
_RUN_REF = re.compile(r"^(?:#?(?P<id>\d+)|last(?:~(?P<back>\d+))?)$")


class ResultStore:
    """The history database: add runs, read them back, resolve ``#12`` / ``last~1``.

    Use it as a context manager (or call `close`). One store is one connection: give each
    thread its own.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(f"cannot open the results history: {exc}") from None
        try:
            self._wal()
            self._conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise self._error(f"not a results history edgepack can read: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    def _wal(self) -> None:
        # Switching a new file to WAL needs it alone for a moment: when several writers create the
        # history at once, SQLite answers "locked" at once instead of waiting, so wait here.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def _error(self, message: str) -> ResultsError:
        return ResultsError(f"{self.path}: {message}", hint="pass another file with --db FILE, or move this one aside")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue instead of failing
        # half-way; a failure (or a kill) before COMMIT leaves nothing behind.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.version()
        if version > schema_version():
            raise ResultsError(
                f"{self.path}: the results history has schema version {version}; this edgepack knows up to {schema_version()}",
                hint="it was written by a newer edgepack: upgrade edgepack, or pass another file with --db FILE",
            )
        while version < schema_version():
            with self._transaction() as conn:
                # Read again under the write lock: another writer (a fleet's other thread, another
                # edgepack) may have created or migrated the history since we looked.
                version = self.version()
                if version < schema_version():
                    MIGRATIONS[version](conn)
                    version += 1
                    conn.execute(f"PRAGMA user_version = {version}")

    def version(self) -> int:
        """Return the database's schema version (``PRAGMA user_version``)."""
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    # -- writing ----------------------------------------------------------------------------

    def add(
        self,
        *,
        device: str,
        manifest: Manifest,
        report: AgentReport,
        bundle_sha: str,
        bundle_path: str,
        budget_failures: list[str] | None = None,
        seconds: dict[str, float] | None = None,
        created: str | None = None,
        trial: dict[str, Any] | None = None,
    ) -> int:
        """Store one measurement in one transaction and return its run id.

        Raises:
            ResultsError: the database cannot be written (read-only, disk full, locked too long).
        """
        from edgepack.bundle import now_utc

        row = (
            created or now_utc(),
            device,
            manifest.target,
            manifest.format.value,
            manifest.precision.value,
            bundle_sha,
            bundle_path,
            json.dumps(manifest_summary(manifest)),
            report.model_dump_json(),
            int(not budget_failures),
            json.dumps(list(budget_failures or [])),
            json.dumps(dict(seconds or {})),
            __version__,
            json.dumps(trial) if trial else None,
        )
        try:
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO runs (created, device, target, format, precision, bundle_sha256, bundle_path, "
                    "manifest, report, passed, budget_failures, seconds, edgepack_version, trial) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                return int(cur.lastrowid)
        except sqlite3.Error as exc:
            raise self._error(f"cannot store the result: {exc}") from None

    # -- reading ----------------------------------------------------------------------------

    def runs(self, last: int | None = None, target: str | None = None, device: str | None = None) -> list[RunRecord]:
        """Return stored runs, oldest first: the LAST newest ones matching TARGET and DEVICE (all when None)."""
        where, args = [], []
        if target:
            where.append("target = ?")
            args.append(target)
        if device:
            where.append("device = ?")
            args.append(device)
        sql = f"SELECT {_COLUMNS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if last is not None:
            sql += " LIMIT ?"
            args.append(min(int(last), MAX_ID))
        rows = self._query(sql, args)
        return [self._record(row) for row in reversed(rows)]

    def get(self, run_id: int) -> RunRecord:
        """Return the run RUN_ID.

        Raises:
            ResultsError: no such run.
        """
        rows = self._query(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", [int(run_id)]) if 0 <= int(run_id) <= MAX_ID else []
        if not rows:
            raise ResultsError(f"no run #{run_id} in {self.path}", hint=self._list_hint())
        return self._record(rows[0])

    def resolve(self, ref: str) -> RunRecord:
        """Return the run REF names: ``12``, ``#12``, ``last`` or ``last~N``.

        Raises:
            ResultsError: REF is malformed, or names no stored run.
        """
        m = _RUN_REF.match(ref.strip().lower())
        if not m:
            raise ResultsError(f"'{ref}' is not a run: use a run id such as #12, or last, or last~1", hint=self._list_hint())
        if m["id"] is not None:
            return self.get(int(m["id"]))
        back = int(m["back"] or 0)
        rows = self._query(f"SELECT {_COLUMNS} FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?", [back]) if back <= MAX_ID else []
        if not rows:
            count = self.count()
            raise ResultsError(
                f"'{ref}' names no run: {self.path} holds {count} run{'s' if count != 1 else ''}",
                hint=self._list_hint() if count else "measure something first: edgepack bench BUNDLE",
            )
        return self._record(rows[0])

    def count(self) -> int:
        """Return how many runs are stored."""
        return self._query("SELECT COUNT(*) FROM runs", [])[0][0]

    def _query(self, sql: str, args: list) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._error(f"cannot read the results history: {exc}") from None

    def _list_hint(self) -> str:
        return "`edgepack report` lists the stored runs" + ("" if self.path == default_db_path() else f" (with --db {self.path})")

    def _record(self, row: tuple) -> RunRecord:
        from pydantic import ValidationError

        from edgepack.agent.protocol import AgentReport

        (run_id, created, device, target, fmt, precision, sha, path, manifest, report, passed, failures, seconds, version, trial) = row
        try:
            parsed = AgentReport.model_validate_json(report)
        except ValidationError as exc:
            raise ResultsError(
                f"run #{run_id} in {self.path} was stored by edgepack {version}; its agent report does not match "
                f"this edgepack's protocol: {str(exc).splitlines()[0]}",
                hint="read it with the edgepack version that stored it, or leave it out (--last, --target, --device)",
            ) from None
        return RunRecord(
            id=run_id,
            created=created,
            device=device,
            target=target,
            format=fmt,
            precision=precision,
            bundle_sha256=sha,
            bundle_path=path,
            manifest=json.loads(manifest),
            report=parsed,
            passed=bool(passed),
            budget_failures=json.loads(failures),
            seconds=json.loads(seconds),
            edgepack_version=version,
            trial=json.loads(trial) if trial else None,
        )


def open_store(path: Path | None = None) -> ResultStore:
    """Open (creating or migrating) the history database at PATH (default: the user data directory's).

    Raises:
        ResultsError: the file cannot be opened, is not a history database, or is from a newer edgepack.
    """
    return ResultStore(path)
