"""list_files: every listed thing has a row, and the path is never a glob."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest

from pixels_sql.session import jar_path
from tests.conftest import FOLDER_READER_CONF

COLUMNS = "path, unix_millis(modificationTime) AS mtime, length, reason, message"

# Every test twice: folders read by the jar's C library, and through java.nio.
pytestmark = pytest.mark.usefixtures("folder_reader")


def listing(spark, root: Path | str, options: str = "") -> list:
    return spark.sql(f"SELECT {COLUMNS} FROM list_files('{root}'{options})").collect()


def uri(path: Path) -> str:
    return f"file:{path}"


def touch(path: Path, content: bytes = b"DICM") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_zero_byte_and_underscore_names_are_listed_dot_names_are_not(spark, tmp_path) -> None:
    files = [
        touch(tmp_path / "a.dcm", b"x" * 300),
        touch(tmp_path / "empty.dcm", b""),
        touch(tmp_path / "_0001.dcm"),
        touch(tmp_path / "_subdir" / "b.dcm"),
        touch(tmp_path / "sub" / "_c"),
    ]
    touch(tmp_path / ".DS_Store")
    touch(tmp_path / ".cache" / "d.dcm")
    touch(tmp_path / "sub" / ".e.dcm")

    rows = listing(spark, tmp_path)
    assert [r.path for r in rows] == sorted(uri(f) for f in files)
    for row, file in zip(rows, sorted(files), strict=True):
        stat = file.stat()
        assert (row.length, row.mtime) == (stat.st_size, stat.st_mtime_ns // 1_000_000)
        assert (row.reason, row.message) == (None, None)

    # What the binaryFile listing leaves out: the zero-byte file and every `_` name.
    spark_own = spark.sql(
        f"SELECT path FROM read_files('{tmp_path}', format => 'binaryFile',"
        " recursiveFileLookup => true)"
    ).collect()
    assert [r.path for r in spark_own] == [uri(tmp_path / "a.dcm")]


def test_paths_are_the_paths_of_the_binary_file_source(spark, tmp_path) -> None:
    for name in ["a b.dcm", "p%20q.dcm", "h#1.dcm", "é ü 中.dcm", "O'Brien.dcm", "x+y;z.dcm"]:
        touch(tmp_path / "dir one" / name, name.encode())
    touch(tmp_path / "ünï" / "%41.dcm")
    query = "SELECT path, modificationTime, length FROM {} ORDER BY path"
    ours = spark.sql(query.format(f"list_files('{tmp_path}')")).collect()
    spark_own = spark.sql(
        query.format(
            f"read_files('{tmp_path}', format => 'binaryFile', recursiveFileLookup => true)"
        )
    ).collect()
    assert len(ours) == 7
    assert ours == spark_own


def test_a_dangling_symlink_is_a_not_found_row(spark, tmp_path) -> None:
    touch(tmp_path / "real.dcm")
    (tmp_path / "gone.dcm").symlink_to(tmp_path / "deleted" / "x.dcm")
    rows = listing(spark, tmp_path)
    assert [(r.path, r.reason) for r in rows] == [
        (uri(tmp_path / "gone.dcm"), "not_found"),
        (uri(tmp_path / "real.dcm"), None),
    ]
    assert (rows[0].length, rows[0].mtime) == (None, None)
    assert str(tmp_path / "deleted" / "x.dcm") in rows[0].message


def test_a_symlink_loop_lists_each_real_file_once(spark, tmp_path) -> None:
    files = [touch(tmp_path / "top.dcm"), touch(tmp_path / "sub" / "inner.dcm")]
    (tmp_path / "sub" / "loop").symlink_to("..")
    (tmp_path / "sub" / "self").symlink_to(".")
    # The same file by a real path and by a symlink: the real path is the one listed.
    (tmp_path / "a_alias.dcm").symlink_to(tmp_path / "sub" / "inner.dcm")
    rows = listing(spark, tmp_path)
    assert [r.path for r in rows] == sorted(uri(f) for f in files)
    assert all(r.reason is None for r in rows)


def test_a_symlinked_folder_outside_the_root_is_listed_under_each_link(spark, tmp_path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "s1" / "x.dcm")
    touch(outside / "s1" / "deeper" / "y.dcm", b"")
    root = tmp_path / "root"
    touch(root / "own.dcm")
    (root / "link_a").symlink_to(outside)
    (root / "link_b").symlink_to(outside)
    (root / "nested").mkdir()
    (root / "nested" / "link_c").symlink_to(outside / "s1")
    (outside / "back").symlink_to(root)  # into the root again: already walked

    rows = listing(spark, root)
    # As `find -L`: under each symlink that leads there; the link back into the root adds
    # nothing (its files are listed by their real paths).
    assert [r.path for r in rows] == [
        uri(root / "link_a" / "s1" / "deeper" / "y.dcm"),
        uri(root / "link_a" / "s1" / "x.dcm"),
        uri(root / "link_b" / "s1" / "deeper" / "y.dcm"),
        uri(root / "link_b" / "s1" / "x.dcm"),
        uri(root / "nested" / "link_c" / "deeper" / "y.dcm"),
        uri(root / "nested" / "link_c" / "x.dcm"),
        uri(root / "own.dcm"),
    ]
    assert [r.length for r in rows] == [0, 4, 0, 4, 0, 4, 4]
    # A symlink as the root is followed too.
    (tmp_path / "root_link").symlink_to(root)
    assert len(listing(spark, tmp_path / "root_link")) == 7


def long_path_folder(root: Path) -> Path:
    """A folder whose path is longer than PATH_MAX (4096 bytes), made with relative calls: the
    system refuses to examine it by its path, for root too."""
    root.mkdir()
    folder = root
    parent = os.open(root, os.O_RDONLY)
    try:
        while len(str(folder)) < 3950:
            os.mkdir("d" * 200, dir_fd=parent)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=parent)
            os.close(parent)
            parent, folder = child, folder / ("d" * 200)
        os.mkdir("x" * 200, dir_fd=parent)
        inside = os.open("x" * 200, os.O_RDONLY, dir_fd=parent)
        os.close(os.open("hidden_by_length.dcm", os.O_CREAT | os.O_WRONLY, dir_fd=inside))
        os.close(inside)
    finally:
        os.close(parent)
    return folder / ("x" * 200)


def test_a_folder_that_cannot_be_examined_is_one_row_and_the_rest_is_listed(
    spark, tmp_path
) -> None:
    before = touch(tmp_path / "a.dcm")
    after = touch(tmp_path / "z" / "z.dcm")
    too_long = long_path_folder(tmp_path / "m")
    rows = listing(spark, tmp_path)
    assert [r.path for r in rows] == [uri(before), uri(too_long), uri(after)]
    assert rows[1].reason == "unreadable"
    assert rows[1].message.endswith(": File name too long")
    assert (rows[1].length, rows[1].mtime) == (None, None)
    shutil.rmtree(tmp_path / "m")


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="list-files-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        path.chmod(0o755)
    shutil.rmtree(folder)


def file_listing_command(folder_reader: str) -> list[str]:
    """The walk of list_files through its command-line entry point (no Spark, same code)."""
    spark_jars = Path(pyspark.__file__).parent / "jars"
    java = Path(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else "java"
    native = f"-D{FOLDER_READER_CONF}={'true' if folder_reader == 'native' else 'false'}"
    return [str(java), native, "-cp", f"{jar_path()}:{spark_jars}/*", "pixelssql.FileListing"]


def test_a_folder_without_permission_is_one_row_and_the_rest_is_listed(
    shared_dir, folder_reader
) -> None:
    """Root reads any folder, so the listing runs as `nobody` when the tests run as root: the
    walk of list_files, through its command-line entry point (no Spark, same code)."""
    touch(shared_dir / "a.dcm")
    touch(shared_dir / "locked" / "secret.dcm")
    touch(shared_dir / "open" / "b.dcm")
    (shared_dir / "locked").chmod(0)
    command = file_listing_command(folder_reader)
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(
        [*command, str(shared_dir)], capture_output=True, text=True, check=True, timeout=60
    )
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (uri(shared_dir / "a.dcm"), "4", "null"),
        (uri(shared_dir / "locked"), "null", "unreadable"),
        (uri(shared_dir / "open" / "b.dcm"), "4", "null"),
    ]
    assert rows[1][4] == f"cannot list folder {shared_dir / 'locked'}: Permission denied"


def test_the_folder_reader_library_loads_here(spark) -> None:
    """`make jar` builds the C folder reader into the jar for this machine: the native runs of
    these tests use it (java.nio is only what other platforms fall back to)."""
    assert spark._jvm.pixelssql.NativeFolders.unavailableReason() is None
    assert spark._jvm.pixelssql.NativeFolders.available()


def test_names_java_cannot_spell_are_read_through_java_nio(spark, tmp_path) -> None:
    """A name in another encoding than UTF-8 (Latin-1 here) is not text Java can turn back into
    the same bytes: those folders are read through java.nio, which keeps the bytes, and each
    path is given as Java spells it (U+FFFD for the byte it cannot decode)."""
    touch(tmp_path / "a.dcm")
    root = os.fsencode(tmp_path)
    with open(os.path.join(root, b"caf\xe9.dcm"), "wb") as file:
        file.write(b"DICM")
    os.mkdir(os.path.join(root, b"sub\xff"))
    with open(os.path.join(root, b"sub\xff", b"x.dcm"), "wb") as file:
        file.write(b"DICM!")
    rows = listing(spark, tmp_path)
    assert [(r.path, r.length, r.reason) for r in rows] == [
        (uri(tmp_path / "a.dcm"), 4, None),
        (f"file:{tmp_path}/caf\ufffd.dcm", 4, None),
        (f"file:{tmp_path}/sub\ufffd/x.dcm", 5, None),
    ]


def test_non_ascii_names_in_a_c_locale_are_listed(tmp_path, folder_reader) -> None:
    """In a C/POSIX locale the JVM spells paths in ASCII: a non-ASCII name is text that cannot
    name the file again (Java writes U+FFFD for each byte it cannot decode); the walk reads
    those folders through java.nio, which keeps the bytes, and lists every file."""
    touch(tmp_path / "a.dcm")
    touch(tmp_path / "dé" / "f.dcm")
    touch(tmp_path / "x" / "y" / "zé.dcm")
    environment = {"PATH": os.environ["PATH"], "LC_ALL": "C"}
    if "JAVA_HOME" in os.environ:
        environment["JAVA_HOME"] = os.environ["JAVA_HOME"]
    result = subprocess.run(
        [*file_listing_command(folder_reader), str(tmp_path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    unknown = "\ufffd\ufffd"  # é is two bytes in UTF-8
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (uri(tmp_path / "a.dcm"), "4", "null"),
        (f"file:{tmp_path}/d{unknown}/f.dcm", "4", "null"),
        (f"file:{tmp_path}/x/y/z{unknown}.dcm", "4", "null"),
    ]


def test_modification_times_to_the_millisecond_before_and_after_1970(spark, tmp_path) -> None:
    """The time java.nio gives (toward zero to the millisecond), from both folder readers."""
    nanoseconds = {
        "a.dcm": 1_700_000_000_123_456_789,
        "b.dcm": 1_700_000_000_000_000_000,
        "c.dcm": -1,
        "d.dcm": -1_500_000_000,
        "e.dcm": -999_999_999,
        "f.dcm": 0,
    }
    for name, ns in nanoseconds.items():
        os.utime(touch(tmp_path / name), ns=(ns, ns))
    rows = listing(spark, tmp_path)
    toward_zero = {
        name: -(-ns // 10**6) if ns < 0 else ns // 10**6 for name, ns in nanoseconds.items()
    }
    assert {r.path.rsplit("/", 1)[1]: r.mtime for r in rows} == toward_zero


def test_a_named_pipe_is_a_not_regular_row(spark, tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe")
    rows = listing(spark, tmp_path)
    assert [(r.path, r.length, r.reason) for r in rows] == [
        (uri(tmp_path / "pipe"), None, "not_regular")
    ]
    assert "named pipe" in rows[0].message


def test_glob_filters_file_names_and_recursive_false_stays_at_the_top(spark, tmp_path) -> None:
    touch(tmp_path / "a.dcm")
    touch(tmp_path / "b.txt")
    touch(tmp_path / "folder.txt" / "c.dcm")
    touch(tmp_path / "folder.txt" / "d.txt")
    (tmp_path / "link.dcm").symlink_to(tmp_path / "folder.txt")  # a folder: not a file
    names = [
        r.path.removeprefix(uri(tmp_path)) for r in listing(spark, tmp_path, ", glob => '*.dcm'")
    ]
    assert names == ["/a.dcm", "/folder.txt/c.dcm"]
    top = listing(spark, tmp_path, ", recursive => false")
    assert [r.path.removeprefix(uri(tmp_path)) for r in top] == ["/a.dcm", "/b.txt"]
    braces = listing(spark, tmp_path, ", glob => '{a,d}.*', recursive => 'false'")
    assert [r.path.removeprefix(uri(tmp_path)) for r in braces] == ["/a.dcm"]


def test_the_root_is_taken_literally(spark, tmp_path) -> None:
    weird = tmp_path / "scans [1] O'Brien ${x} é"
    touch(weird / "a.dcm")
    touch(tmp_path / "scans 1 O'Brien ${x} é" / "glob_would_match_this.dcm")
    # As a query parameter, and in the SQL text with Spark's `${x}` substitution off.
    bound = spark.sql(
        "SELECT path FROM list_files(:root, glob => :glob)",
        args={"root": f"file://{weird}", "glob": "*.dcm"},
    ).collect()
    assert [r.path for r in bound] == [uri(weird / "a.dcm")]
    literal = str(weird).replace("'", "\\'")
    substitute = spark.conf.get("spark.sql.variable.substitute")
    spark.conf.set("spark.sql.variable.substitute", "false")
    try:
        rows = spark.sql(f"SELECT path FROM list_files('{literal}')").collect()
    finally:
        spark.conf.set("spark.sql.variable.substitute", substitute)
    assert [r.path for r in rows] == [uri(weird / "a.dcm")]


def test_a_root_file_is_one_row_and_a_missing_root_is_an_error(spark, tmp_path) -> None:
    file = touch(tmp_path / "only.dcm")
    assert [r.path for r in listing(spark, file)] == [uri(file)]
    assert [r.path for r in listing(spark, f"file:{tmp_path}/./only.dcm")] == [uri(file)]
    missing = tmp_path / "no such folder"
    with pytest.raises(Exception, match=f"list_files: path does not exist: {missing}"):
        listing(spark, missing)


def test_hadoop_file_systems_are_listed_by_hadoop(spark, tmp_path) -> None:
    """A path with a scheme goes through Hadoop's FileSystem: here a viewfs mount of tmp_path."""
    touch(tmp_path / "a.dcm")
    touch(tmp_path / "_b.dcm", b"")
    touch(tmp_path / ".c.dcm")
    touch(tmp_path / "sub" / "d.txt")
    spark.conf.set("fs.viewfs.mounttable.listfiles.link./data", f"file://{tmp_path}")
    try:
        rows = listing(spark, "viewfs://listfiles/data")
        glob = listing(spark, "viewfs://listfiles/data", ", glob => '*.dcm', recursive => false")
    finally:
        spark.conf.unset("fs.viewfs.mounttable.listfiles.link./data")
    expected = ["/_b.dcm", "/a.dcm", "/sub/d.txt"]
    assert [r.path for r in rows] == [f"viewfs://listfiles/data{e}" for e in expected]
    assert [r.length for r in rows] == [0, 4, 4]
    assert [r.path for r in glob] == [f"viewfs://listfiles/data{e}" for e in expected[:2]]


def test_list_files_exists_in_a_new_session(spark, tmp_path) -> None:
    touch(tmp_path / "a.dcm")
    other = spark.newSession()
    assert other.sql(f"SELECT count(*) FROM list_files('{tmp_path}')").first()[0] == 1
    usage = other.sql("DESCRIBE FUNCTION list_files").collect()
    assert any("list_files(path" in r[0] for r in usage)
