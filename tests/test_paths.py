"""Client-supplied file names resolved inside a root folder: everything else is a 404.

Every layout puts files outside the root (``secret.txt``, ``x``) that a traversal would reach, and files inside
the root under names the text check must refuse (``con.txt``, ``a/b`` for ``a/./b``), so a refusal proves the
rule, not a missing file.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chute.paths
from chute.exceptions import NotFound
from chute.paths import check_name, open_inside, resolve_inside


def build(base: Path) -> Path:
    """A root folder under ``base`` with every kind of entry; secrets beside it. Returns the root."""
    (base / "secret.txt").write_text("outside the root")
    (base / "x").write_text("outside x")
    root = base / "root"
    root.mkdir()
    (root / "hello.txt").write_text("hello")
    (root / "été.txt").write_text("accented")
    (root / "file with spaces.txt").write_text("spaces")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner")
    (root / "a").mkdir()
    (root / "a" / "b").write_text("a/b")
    # Legal names on Linux that Windows reserves: present, so only the name check can refuse them.
    for reserved in ("con.txt", "CON", "LPT1", "aux.tar.gz", "nul"):
        (root / reserved).write_text("reserved")
    # Literal names: served as they are, never decoded or folded into a separator.
    (root / "%2e%2e").mkdir()
    (root / "%2e%2e" / "served.txt").write_text("literal percent")
    (root / "..\u2215secret.txt").write_text("division slash")
    (root / "..\uff0fsecret.txt").write_text("fullwidth solidus")
    # Symlinks.
    (root / "link_in").symlink_to("hello.txt")
    (root / "link_in_abs").symlink_to(root / "hello.txt")
    (root / "sub" / "link_up").symlink_to("../hello.txt")
    (root / "dir_link_in").symlink_to("sub")
    (root / "link_out_abs").symlink_to(base / "secret.txt")
    (root / "link_out_rel").symlink_to("../secret.txt")
    (root / "sub" / "link_up_out").symlink_to("../../secret.txt")
    (root / "dir_link_out").symlink_to(base)
    (root / "link_dir").symlink_to("sub")
    (root / "link_dev").symlink_to("/dev/null")
    (root / "loop_a").symlink_to("loop_b")
    (root / "loop_b").symlink_to("loop_a")
    (root / "self_loop").symlink_to("self_loop")
    (root / "dangling").symlink_to("nowhere.txt")
    os.mkfifo(root / "fifo")  # opening it would block the server
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build(tmp_path)


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Hypothesis runs many examples per test call: one module-wide layout, never modified by the tests.
    return build(tmp_path_factory.mktemp("paths"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# Names the text check refuses, whatever the file system holds.
REFUSED_AS_TEXT = [
    "",
    ".",
    "..",
    "../x",
    "../secret.txt",
    "a/../../x",
    "sub/../hello.txt",  # would stay inside, yet a ".." segment is refused outright
    "./hello.txt",
    "hello.txt/.",
    "a/./b",
    "a//b",
    "sub/",
    "../" * 50 + "etc/passwd",
    "..\\x",
    "..\\secret.txt",
    "\\\\server\\share",
    "//server/share",
    "/etc/passwd",
    "/root/hello.txt",
    "C:\\Windows",
    "C:x",
    "c:/x",
    "hello.txt\x00",
    "hello.txt\x00.png",
    "\x00",
    "hello\r\n.txt",
    "hello\n",
    "hello\x7f",
    "...",
    ".. ",
    ". .",
    "..../x",
    "sub/.. /x",
    "CON",
    "con",
    "CON.",
    "con ",
    "con.txt",
    "LPT1",
    "lpt1.log",
    "aux.tar.gz",
    "nul",
    "sub/prn.txt",
    "COM1",
    "com\u00b9",
    "CONIN$",
    "a" * 1025,
    "a/" * 600 + "x",
    "a\ud800b",  # a lone surrogate: no file name can hold it
]

# Names that pass the text check but must not resolve: they name nothing inside the root.
NOT_FOUND = [
    "missing.txt",
    "%2e%2e/x",  # never percent-decoded: a folder literally named "%2e%2e" has no "x"
    "%2e%2e/secret.txt",
    "%2e%2e%2fx",
    "%252e%252e/x",
    "..%2fx",
    "..%2fsecret.txt",
    "..%5csecret.txt",
    "..\u2215x",  # U+2215 DIVISION SLASH: an ordinary character on Linux
    "..\uff0fx",  # U+FF0F FULLWIDTH SOLIDUS
    "\uff0e\uff0e/x",  # U+FF0E FULLWIDTH FULL STOP
    "\u2024\u2024/x",  # U+2024 ONE DOT LEADER
    "~/x",
    "hello.txt.",  # Windows would read these as hello.txt; on Linux they are other, missing, names
    "hello.txt ",
    "sub./inner.txt",
    "sub /inner.txt",
    "a" * 300,  # longer than a file name may be: the OS refuses it
    "hello.txt/x",
    "a\udc80b",  # surrogate-escaped byte 0x80: a valid, missing name
    # symlinks
    "link_out_abs",
    "link_out_rel",
    "sub/link_up_out",
    "dir_link_out/secret.txt",
    "dir_link_out/x",
    "link_dir",
    "link_dev",
    "loop_a",
    "loop_a/x",
    "self_loop",
    "dangling",
    # not regular files
    "sub",
    "a",
    "dir_link_in",
    "%2e%2e",
    "fifo",
]

SERVED = [
    ("hello.txt", "hello.txt", "hello"),
    ("été.txt", "été.txt", "accented"),
    ("file with spaces.txt", "file with spaces.txt", "spaces"),
    ("sub/inner.txt", "sub/inner.txt", "inner"),
    ("a/b", "a/b", "a/b"),
    ("link_in", "hello.txt", "hello"),
    ("link_in_abs", "hello.txt", "hello"),
    ("sub/link_up", "hello.txt", "hello"),
    ("dir_link_in/inner.txt", "sub/inner.txt", "inner"),
    ("%2e%2e/served.txt", "%2e%2e/served.txt", "literal percent"),
    ("..\u2215secret.txt", "..\u2215secret.txt", "division slash"),
    ("..\uff0fsecret.txt", "..\uff0fsecret.txt", "fullwidth solidus"),
]


@pytest.mark.parametrize("name", REFUSED_AS_TEXT)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(NotFound):
        check_name(name)


@pytest.mark.parametrize("name", [name for name, _, _ in SERVED] + ["%2e%2e/x", "a" * 1024, "hello.txt."])
def test_check_name_accepts(name: str) -> None:
    assert "/".join(check_name(name)) == name


@pytest.mark.parametrize("name", REFUSED_AS_TEXT + NOT_FOUND)
def test_traversal_corpus_is_not_found(root: Path, name: str) -> None:
    before = open_fds()
    with pytest.raises(NotFound) as refused:
        resolve_inside(root, name)
    with pytest.raises(NotFound):
        open_inside(root, name)
    assert open_fds() == before  # no descriptor left open by a refusal
    assert refused.value.status == 404
    assert refused.value.detail == f"no file named {name[:200]!r}"  # the name, never a server path


@pytest.mark.parametrize(("name", "real", "content"), SERVED)
def test_served_names(root: Path, name: str, real: str, content: str) -> None:
    path = resolve_inside(root, name)
    assert path == (root / real).resolve()  # the real path: symlinks followed
    assert path.read_text() == content
    fd, opened = open_inside(root, name)
    try:
        assert opened == path
        assert os.read(fd, 1000) == content.encode()
    finally:
        os.close(fd)


def test_a_refusal_looks_like_a_missing_file(root: Path) -> None:
    # The client cannot tell a forbidden name from an absent one.
    with pytest.raises(NotFound) as forbidden:
        resolve_inside(root, "../secret.txt")
    with pytest.raises(NotFound) as missing:
        resolve_inside(root, "missing.txt")
    assert type(forbidden.value) is type(missing.value)
    assert str(forbidden.value) == "no file named '../secret.txt'"
    assert str(missing.value) == "no file named 'missing.txt'"


def test_root_given_through_a_symlink(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert resolve_inside(alias, "link_in") == (root / "hello.txt").resolve()
    fd, path = open_inside(alias, "sub/inner.txt")
    os.close(fd)
    assert path == (root / "sub" / "inner.txt").resolve()
    with pytest.raises(NotFound):
        resolve_inside(alias, "../secret.txt")
    with pytest.raises(NotFound):
        resolve_inside(alias, "link_out_rel")


def test_open_inside_gives_a_read_only_private_descriptor(root: Path) -> None:
    before = open_fds()
    fd, path = open_inside(root, "hello.txt")
    try:
        assert open_fds() == before + 1
        assert path == (root / "hello.txt").resolve()
        assert os.read(fd, 100) == b"hello"
        assert stat.S_ISREG(os.fstat(fd).st_mode)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        assert not os.get_inheritable(fd)  # no child process inherits it (O_CLOEXEC, and Python's default)
        with pytest.raises(OSError):  # noqa: PT011 - EBADF, the errno is the point rather than a message
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert open_fds() == before
    assert (root / "hello.txt").read_text() == "hello"


@pytest.mark.parametrize("link", ["link_in", "link_out_abs"])
def test_a_file_swapped_for_a_symlink_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch, link: str) -> None:
    # As if "hello.txt" became a symlink between its resolution and the open: O_NOFOLLOW refuses it, even one
    # that points inside the root (the path check after the open would let that one through).
    monkeypatch.setattr(chute.paths, "resolve_inside", lambda _root, _name: root / link)
    before = open_fds()
    with pytest.raises(NotFound):
        open_inside(root, "hello.txt")
    assert open_fds() == before


def test_a_descriptor_that_ends_up_outside_is_closed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if a folder on the way were swapped for a symlink out: the opened file's own path is checked.
    opened: list[int] = []
    real_readlink = os.readlink

    def readlink(path: str) -> str:
        if path.startswith("/proc/self/fd/"):
            opened.append(int(path.rsplit("/", 1)[1]))
            return str(root.parent / "secret.txt")
        return real_readlink(path)

    monkeypatch.setattr(os, "readlink", readlink)
    before = open_fds()
    with pytest.raises(NotFound):
        open_inside(root, "hello.txt")
    monkeypatch.undo()
    assert len(opened) == 1
    assert open_fds() == before
    with pytest.raises(OSError):  # noqa: PT011 - EBADF: that descriptor was closed
        os.fstat(opened[0])


# -- fuzzing

TOKENS = [
    "..",
    ".",
    "/",
    "\\",
    " ",
    ":",
    "%2e",
    "%2f",
    "C:",
    "\x00",
    "\u2215",
    "\uff0f",
    "hello.txt",
    "secret.txt",
    "x",
    "sub",
    "a",
    "b",
    "con",
    "link_in",
    "link_out_abs",
    "link_out_rel",
    "dir_link_out",
    "dir_link_in",
    "loop_a",
    "fifo",
]
NAMES = st.one_of(
    st.text(),
    st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=20).map("".join),
)


@pytest.fixture(scope="module")
def outside_files(shared_root: Path) -> set[Path]:
    return {(shared_root.parent / "secret.txt").resolve(), (shared_root.parent / "x").resolve()}


@settings(max_examples=600, deadline=None)
@given(name=NAMES)
def test_any_name_is_refused_or_inside(shared_root: Path, outside_files: set[Path], name: str) -> None:
    real_root = shared_root.resolve()
    try:
        path = resolve_inside(shared_root, name)
    except NotFound:
        return
    assert path.is_relative_to(real_root)
    assert path == path.resolve()
    assert path.is_file()
    assert path not in outside_files
    fd, opened = open_inside(shared_root, name)
    os.close(fd)
    assert opened == path


def test_a_fifo_swapped_in_is_refused_without_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe")
    # resolve_inside would refuse a FIFO; pretend it was a regular file when checked, as in a race.
    monkeypatch.setattr(chute.paths, "resolve_inside", lambda r, n: (r / n).resolve())
    with pytest.raises(NotFound):
        chute.paths.open_inside(root, "pipe")
