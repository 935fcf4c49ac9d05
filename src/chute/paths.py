"""Resolving a client-supplied file name inside a root folder, or refusing it with 404.

A name is checked twice. First as text, before the file system sees it: no NUL or control characters, no
backslash (a Windows separator), no absolute or UNC path or drive letter, no ``.``/``..`` segment, no Windows
reserved device name. The name is never percent-decoded here: the framework decoded the URL once, and a literal
``%2e%2e`` left after that is an odd file name, not a parent directory. Then as a path: its real path (symlinks
followed) must lie inside the root's real path, so a symlink that leaves the root is refused too.
:func:`open_inside` opens the resolved file without following a final symlink and checks, through
``/proc/self/fd``, that the file it really opened is inside the root.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from chute.exceptions import NotFound

_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(\..*)?$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


def _refuse(name: str) -> NotFound:
    # One answer for every refusal: a client cannot tell a forbidden name from a missing file.
    return NotFound(f"no file named {name[:200]!r}")


def check_name(name: str) -> list[str]:
    """The segments of a relative, harmless file name; :class:`NotFound` for anything else."""
    if not name or len(name) > 1024 or _CONTROL.search(name) or "\\" in name or _DRIVE.match(name):
        raise _refuse(name)
    if name.startswith("/"):
        raise _refuse(name)
    try:
        os.fsencode(name)  # a lone surrogate cannot name a file: the OS calls would raise UnicodeEncodeError
    except UnicodeEncodeError:
        raise _refuse(name) from None
    segments = name.split("/")
    for segment in segments:
        stripped = segment.rstrip(" .")  # Windows ignores trailing dots and spaces: "..." and ".. " mean ".."
        if not segment or segment in (".", "..") or not stripped or _RESERVED.match(stripped):
            raise _refuse(name)
    return segments


def resolve_inside(root: Path, name: str) -> Path:
    """The real path of ``name`` under ``root``, a regular file inside it; :class:`NotFound` otherwise."""
    segments = check_name(name)
    real_root = root.resolve(strict=True)
    try:
        path = real_root.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise _refuse(name) from None
    if not path.is_relative_to(real_root) or not path.is_file():
        raise _refuse(name)
    return path


def open_inside(root: Path, name: str) -> tuple[int, Path]:
    """A read-only descriptor of ``name`` under ``root`` and its real path; :class:`NotFound` otherwise.

    The final component is opened with ``O_NOFOLLOW``: its real path was just resolved, so a symlink there means
    the file was swapped in between; the descriptor's own path is checked as well. ``O_NONBLOCK`` keeps a FIFO
    swapped in at the last moment from blocking the open; it is then refused as not a regular file.
    """
    path = resolve_inside(root, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise _refuse(name) from None
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else path
        if not opened.is_relative_to(root.resolve()) or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(name)
    except BaseException:
        os.close(fd)
        raise
    return fd, path
