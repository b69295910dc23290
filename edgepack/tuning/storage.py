"""Where `edgepack tune` keeps its studies, how they are opened, and the lock that keeps benches on one device apart.

The studies live in one SQLite database in the user data directory (Optuna's RDB storage); every
error it can give (a folder that cannot be made, a file that is not a database, read-only, written
by another Optuna) is one line naming the file. Benches on one device never overlap, also across
processes (two `tune`s, or a `tune` and a script): each holds an exclusive lock file per device.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator

from edgepack.errors import EdgepackError


def storage_path() -> Path:
    """Where the studies live: ``<user data dir>/tune.sqlite3``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("edgepack")) / "tune.sqlite3"


def storage_url() -> str:
    """The durable Optuna storage: ``<user data dir>/tune.sqlite3``.

    Raises:
        EdgepackError: its folder cannot be made, or a directory stands in its place."""
    path = storage_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgepackError(f"cannot make {path.parent} for the tune studies: {exc.strerror}",
                            hint="make that folder writable, or set XDG_DATA_HOME to one that is") from None
    if path.is_dir():
        raise EdgepackError(f"{path} is a directory, not the tune studies' database", hint="move it aside; edgepack makes a new database there")
    return f"sqlite:///{path}"


def open_study(name: str, directions: list[str], sampler):
    """Create or reopen the study NAME in the durable storage.

    Two tunes that make a fresh storage at once race to create its tables: the loser tries again.

    Raises:
        EdgepackError: a storage that is not a readable, writable SQLite database of a known revision.
    """
    import time

    import optuna

    url = storage_url()
    attempts = 8
    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=name, storage=url, directions=directions, sampler=sampler, load_if_exists=True)
        except Exception as exc:  # sqlalchemy's, sqlite3's and optuna's errors alike: the storage cannot be used
            text = str(exc)
            racing = any(n in text for n in ("already exists", "UNIQUE constraint failed", "is locked"))
            if racing and attempt < attempts - 1:  # another tune made the tables (or the study) meanwhile
                time.sleep(0.1 * (attempt + 1))
                continue
            raise EdgepackError(
                f"cannot use {storage_path()} for the tune studies: {_storage_problem(text)}",
                hint="move that file aside (edgepack makes a new one; its studies are then forgotten), or make it writable",
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _storage_problem(text: str) -> str:
    lowered = text.lower()
    for needle, words in (("readonly", "it is read-only"), ("read-only", "it is read-only"), ("not a database", "it is not an SQLite database"),
                          ("unable to open", "it cannot be opened"), ("revision", "it was written by another version of Optuna"),
                          ("no longer compatible", "it was written by another version of Optuna"), ("is locked", "it is locked by another process")):
        if needle in lowered:
            return words
    return (text.splitlines() or ["unknown error"])[0][:200]



def claim_trial(trial) -> None:
    """Record which process runs TRIAL (host and pid), so that a later run can tell it was orphaned."""
    import os
    import socket

    trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})


def fail_orphans(study) -> list[int]:
    """Mark failed the trials of STUDY left running by a process of this host that is gone (killed mid-study).

    Returns:
        The numbers of the trials it failed.
    """
    import os
    import socket

    import optuna

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner") or {}
        if owner.get("host") != host or not isinstance(owner.get("pid"), int) or _alive(owner["pid"]) or owner["pid"] == os.getpid():
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


def lock_path(device: str) -> Path:
    """The lock file of DEVICE's benches (in the user cache directory)."""
    import platformdirs

    digest = hashlib.sha256(device.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("edgepack")) / "locks" / f"bench-{digest}.lock"


@contextlib.contextmanager
def device_lock(device: str) -> Iterator[None]:
    """Hold DEVICE's bench lock: wait while another process benches on it, release on leaving (or when the process dies)."""
    import fcntl

    path = lock_path(device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as exc:
        raise EdgepackError(f"cannot make the lock file {path}: {exc.strerror}", hint="make the user cache folder writable") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the kernel drops it with the process: a killed tune leaves no stale lock
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_sampler(kind: str, workers: int = 1, seed: int = 0):
    """The Optuna sampler `edgepack tune --sampler KIND` uses (seeded: a study is repeatable)."""
    import optuna

    # Several builds at once: TPE assumes the running trials land where it last looked (constant
    # liar), so that they do not all ask for the same point.
    # Multivariate TPE models the settings together (precision and pruning interact): on the
    # digits grid of scripts/bench_tune.py it needs about a third fewer trials than independent TPE.
    if kind == "tpe":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True, constant_liar=workers > 1)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    # random, and the grid: every grid point is enqueued in turn (optuna's GridSampler stops the
    # study from inside `tell`, which only works under `optimize`); the sampler fills the rest.
    return optuna.samplers.RandomSampler(seed=seed)
