r"""Writing files and folders so that a failure leaves nothing behind and nothing is clobbered.

Every writer of the library and of the command line goes through :func:`atomic_path` (one file)
or :func:`atomic_folder` (a folder of outputs): the content is written to a fresh temporary name
made by :mod:`tempfile` in the target's own folder (so the final rename stays on one file system
and never collides with an existing file, whatever its name), and renamed onto the target only
after the write succeeded. Without ``overwrite`` an existing target is refused before anything
is written, and the final step links the file in place (which fails, rather than replaces, if
the target appeared meanwhile).

A target that exists but is not a regular file is never replaced, with or without ``overwrite``
(``--force``): a character device (``/dev/null``, ``/dev/stdout``) or a FIFO is written in place,
since renaming a file onto it would destroy the node; anything else (a socket, a block device) is
refused. A path ending in a separator names a folder, and a file target given that way is refused
rather than written under the folder's name.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('hello', ['a.txt'])
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_folder", "atomic_path", "check_target", "is_stream"]


def check_target(path: str | os.PathLike, *, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = (),
                 folder: bool = False, what: str = "output") -> Path:
    r"""Returns ``path`` as a Path if writing there is allowed, else raises naming it.

    Arguments:
        path: the file (or, with ``folder``, the folder) to write.
        overwrite: whether an existing target may be replaced.
        inputs: files read by the same command; never overwritten, even with ``overwrite``.
        folder: the target is a folder rather than a file.
        what: how messages call the target.

    Raises:
        ValueError: the target is one of ``inputs``, or of the wrong kind (a folder for a file).
        FileExistsError: the target exists and ``overwrite`` is false.
        FileNotFoundError: the folder that should hold it does not exist.

    Example:
        >>> check_target("x.csv", inputs=["./x.csv"])
        Traceback (most recent call last):
        ...
        ValueError: output x.csv is also an input file; choose another output path
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"{what} must be a non-empty path, got {path!r}")
    if not folder and str(path).endswith((os.sep, "/")):
        raise ValueError(f"{what} {path} ends with a path separator (a folder); give a file name")
    out = Path(path)
    for item in inputs:
        if item is None:
            continue
        src = Path(item)
        same = out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src))
        if same:
            raise ValueError(f"{what} {out} is also an input file; choose another output path")
        if folder and out.resolve() in src.resolve().parents and overwrite:
            raise ValueError(f"{what} folder {out} holds the input file {src}; choose another output folder")
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"{what} {out} is a file; give a folder")
    if not folder and out.is_dir():
        raise ValueError(f"{what} {out} is a folder; give a file name")
    if not folder and out.exists() and not out.is_file():
        if is_stream(out):
            return out  # written in place (see the module docstring), --force or not
        raise ValueError(f"{what} {out} exists and is not a regular file (nor a device or FIFO to write "
                         "into); give a file path")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{what} {out} exists; pass --force (overwrite=True) to overwrite it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} of {what} {out} does not exist")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = (),
                what: str = "output") -> Iterator[Path]:
    r"""Yields a temporary path next to ``path``; on success it becomes ``path``, on error it is removed.

    Arguments:
        path: the final file.
        overwrite: replace an existing file (else FileExistsError, before and at the rename).
        inputs: files that must never be overwritten (ValueError).
        what: how messages call the target.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "b.txt"
        >>> try:
        ...     with atomic_path(target) as tmp:
        ...         _ = tmp.write_text("half")
        ...         raise RuntimeError("disk full")
        ... except RuntimeError:
        ...     pass
        >>> list(target.parent.iterdir())
        []
    """
    out = check_target(path, overwrite=overwrite, inputs=inputs, what=what)
    if is_stream(out):
        yield out  # a device or FIFO: no rename onto it, ever
        return
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, out)
        else:
            _link_new(tmp, out, what)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = (),
                  what: str = "output folder") -> Iterator[Path]:
    r"""Yields a folder to fill; a new target appears whole only on success.

    A new target is built in a temporary folder next to it and renamed at the end. An existing
    target (allowed only with ``overwrite``) is filled in place, each file through
    :func:`atomic_path`, so a failure leaves its earlier files as they were.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_folder(target) as folder:
        ...     _ = (folder / "m.txt").write_text("1")
        >>> sorted(p.name for p in target.iterdir())
        ['m.txt']
    """
    out = check_target(path, overwrite=overwrite, inputs=inputs, folder=True, what=what)
    if out.is_dir():
        yield out
        return
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        try:
            os.rename(tmp, out)  # fails if `out` appeared meanwhile (non-empty) rather than merging
        except OSError as err:
            raise FileExistsError(f"{what} {out} appeared while writing; nothing was written there") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_stream(path: Path) -> bool:
    """Whether ``path`` is an existing character device or FIFO: written in place, never replaced.

    Example:
        >>> is_stream(Path("/dev/null")), is_stream(Path(__file__))
        (True, False)
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _link_new(tmp: Path, out: Path, what: str) -> None:
    """Moves ``tmp`` to ``out`` only if ``out`` does not exist (no clobbering, even in a race)."""
    try:
        os.link(tmp, out)
    except FileExistsError as err:
        raise FileExistsError(f"{what} {out} exists; pass --force (overwrite=True) to overwrite it") from err
    except OSError:
        # File systems without hard links: check, then rename (a narrow race remains).
        if out.exists():
            raise FileExistsError(f"{what} {out} exists; pass --force (overwrite=True) to overwrite it") from None
        os.replace(tmp, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
