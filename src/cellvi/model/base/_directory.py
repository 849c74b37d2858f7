"""A model directory that always holds the old model or the new one, whole.

Saving writes every file of the new model into a staging folder inside the directory,
flushes the files and the folder to disk, and then commits with one atomic step: the rename
of a commit record into the staging folder. Only after that are the staged files renamed
into place and the previous model's files that the new one does not replace removed. A save
killed before the commit leaves the old model untouched (and a staging folder that the next
save or load deletes); a save killed after it is finished by the next save or load, which
redoes the renames from the record. Writers hold an exclusive lock on the directory and
readers a shared one, so no reader sees a model half replaced.

Only files cellvi wrote are ever replaced or removed: the record names them with the
checksums they had, and a file whose content no longer matches is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX; where it is missing (Windows) saves are still atomic, just not locked.
    import fcntl
except ImportError:  # pragma: no cover - not reached on Linux or macOS
    fcntl = None

STAGING_PREFIX = ".cellvi-staging-"
COMMIT_RECORD = "commit.json"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flush_file(path: Path) -> None:
    """Make a written file durable (its data reach the disk before anything depends on them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_directory(path: Path) -> None:
    """Make the entries of a directory (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:  # some filesystems cannot fsync a directory
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(directory: Path, exclusive: bool) -> Iterator[None]:
    """Hold a lock on ``directory``: exclusive for writers, shared for readers.

    The lock is taken on the directory itself, so there is no lock file to leave behind. A
    waiter that gets the lock checks that the directory it locked is still the one at that
    path (a failed save may remove a directory it created), and locks again otherwise. A
    directory that cannot be opened (no read permission) is used without a lock.
    """
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(directory, os.O_RDONLY)
        except PermissionError:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            locked_stat, current = os.fstat(fd), os.stat(directory)
            same = (locked_stat.st_ino, locked_stat.st_dev) == (current.st_ino, current.st_dev)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        if not directory.exists():
            raise FileNotFoundError(f"{directory} was removed while waiting for its lock.")
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def staging_folders(directory: Path) -> list[Path]:
    """The staging folders cellvi left in ``directory`` (from saves under way or killed)."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    return [e for e in entries if e.name.startswith(STAGING_PREFIX) and e.is_dir()]


def recover(directory: Path) -> None:
    """Finish committed saves and delete uncommitted ones; call with the exclusive lock."""
    for staging in staging_folders(directory):
        record = staging / COMMIT_RECORD
        if record.is_file():
            _roll_forward(directory, staging, json.loads(record.read_text()))
        else:
            shutil.rmtree(staging, ignore_errors=True)
    flush_directory(directory)


def _roll_forward(directory: Path, staging: Path, record: dict) -> None:
    """Redo a committed save's renames and removals; each step can be repeated safely."""
    for name in record["replace"]:
        if (staging / name).exists():
            os.replace(staging / name, directory / name)
    for name, digest in record["remove"].items():
        target = directory / name
        if target.is_file() and sha256(target) == digest:
            target.unlink()
    flush_directory(directory)
    shutil.rmtree(staging, ignore_errors=True)


class Staging:
    """A staging folder for one save: files are written here, then committed at once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        self.path.mkdir()
        self.committed = False

    def file(self, name: str) -> Path:
        """Where to write the staged file ``name`` (its final name in the directory)."""
        return self.path / name

    def commit(self, replace: list[str], remove: dict[str, str]) -> None:
        """Flush the staged files and commit them, then move them into place.

        Parameters
        ----------
        replace
            Names of the staged files, in the order they are moved into place (the file that
            describes the model last).
        remove
            Files of the previous model the new one does not replace, with the checksums
            cellvi recorded for them; one whose content changed since is kept.
        """
        for name in replace:
            flush_file(self.file(name))
        flush_directory(self.path)
        pending = self.path / f"{COMMIT_RECORD}.pending"
        pending.write_text(json.dumps({"replace": replace, "remove": remove}))
        flush_file(pending)
        # The commit: after this rename the new model is the saved one, even if the process
        # dies before the files below are in place (the next save or load moves them).
        os.replace(pending, self.path / COMMIT_RECORD)
        flush_directory(self.path)
        self.committed = True
        _roll_forward(self.directory, self.path, {"replace": replace, "remove": remove})

    def discard(self) -> None:
        """Delete an uncommitted staging folder (a failed save)."""
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
