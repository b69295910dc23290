"""Write files and directories so that readers never see half of one: a temporary sibling, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from edgepack.errors import EdgepackError


def cannot_write(path: Path, exc: OSError, what: str) -> EdgepackError:
    """Return the one-line error for an OSError (permission, no space, read-only) while writing WHAT at PATH."""
    return EdgepackError(
        f"cannot write {what} {path}: {exc.strerror or exc}",
        hint="check that the directory exists and is writable and that the disk has room, or write elsewhere",
    )


def temp_dir_beside(path: Path) -> Path:
    """Make an empty directory next to PATH (same file system, so a rename can replace PATH)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a bundle is an ordinary directory
    return tmp


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def replace_dir(src: Path, dst: Path) -> None:
    """Move SRC to DST, replacing an existing DST with as short a window as a rename allows."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


@contextmanager
def replacing_dir(out: Path, what: str, check: Optional[Callable[[Path], None]] = None) -> Iterator[Path]:
    """Yield an empty directory beside OUT to fill; once filled, it replaces OUT (after CHECK(OUT), if given).

    On any failure the directory is removed and OUT is left as it was; an OSError (permissions,
    no space) becomes `cannot_write` for WHAT at OUT.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(out)
    except OSError as exc:
        raise cannot_write(out, exc, what) from None
    try:
        yield tmp
        if check is not None:
            check(out)
        replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise cannot_write(out, exc, what) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path: Path, text: str, exclusive: bool = False) -> None:
    """Write TEXT to PATH through a temporary file and a rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode if path.exists() else 0o666 & ~_umask())  # mkstemp makes it private
        if exclusive:
            os.link(tmp, path)  # fails if PATH appeared meanwhile: never overwrite
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        raise EdgepackError(f"{path} already exists", hint="pick another name") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
