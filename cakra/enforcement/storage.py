"""Evidence files on the private storage: their names, durable writes of originals, removal.

An original is legal evidence, kept byte for byte: it is written straight to
the disk and flushed, with its directory, before the rows that point at it
commit (``evidence_store_originals_rollback_unsafe``). Only ids make a file
name (``evidence_file_name``): no name a client sent ever reaches the file
system.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from datetime import datetime
from pathlib import Path
from uuid import UUID

import structlog
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.utils import timezone

from cakra.enforcement.models import evidence_storage

logger = structlog.get_logger(__name__)


def evidence_file_name(*, kind: str, region_id: int, evidence_id: UUID, extension: str, when: datetime) -> str:
    """``<kind>/<region>/<yyyy>/<mm>/<dd>/<evidence id>.<ext>``: dated folders keep directories small."""
    return f"{kind}/{region_id}/{timezone.localtime(when):%Y/%m/%d}/{evidence_id}.{extension}"


def evidence_store_originals_rollback_unsafe(*, files: list[tuple[str, bytes]]) -> list[str]:
    """Write originals to the private storage, durably; return the names actually used.

    Unsafe on rollback: the files stay if the caller's transaction fails, so
    the caller must pass the result to ``evidence_delete_files`` then. A
    partial failure here removes what it wrote before raising.

    On the file system (the configured storage), every file's data and every
    new directory entry is on disk when this returns, before the caller
    commits the rows that point at them: an original is legal evidence, and
    once the intake has answered 201 the camera system will not send it
    again, so a crash must not leave a committed row whose file was still
    only in the page cache.
    """
    storage = evidence_storage()
    saved: list[str] = []
    try:
        if isinstance(storage, FileSystemStorage):
            _store_durably(storage, files=files, saved=saved)
        else:  # another backend keeps its own durability promise
            for name, content in files:
                saved.append(storage.save(name, ContentFile(content)))
    except BaseException:
        evidence_delete_files(names=saved)
        raise
    return saved


# Files of one call held open between their write and their flush; bounds the
# descriptors a request holds whatever the batch size.
_SYNC_GROUP = 32
_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has fsync only
_O_DIRECT = getattr(os, "O_DIRECT", 0)
# Direct I/O wants the memory, the length and the file offset aligned to the
# device's logical block; a page is a multiple of every common one.
_DIRECT_ALIGN = mmap.PAGESIZE


class _DirectBuffer(threading.local):
    """Page-aligned memory (an anonymous map) for direct writes, one per
    thread, grown to the largest original written and then reused."""

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, 0x100000)

    def holding(self, content: bytes) -> memoryview:
        """``content`` zero-padded to the alignment, in this buffer."""
        size = len(content)
        padded = -(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN or _DIRECT_ALIGN
        if padded > len(self.memory):
            self.memory.close()
            self.memory = mmap.mmap(-1, padded)
        view = memoryview(self.memory)[:padded]
        view[:size] = content
        view[size:] = bytes(padded - size)
        return view


_direct_buffer = _DirectBuffer()


def _store_durably(storage: FileSystemStorage, *, files: list[tuple[str, bytes]], saved: list[str]) -> None:
    """Write ``files`` as FileSystemStorage.save would (same paths and permissions), then flush them.

    Each file is written with direct I/O where the file system supports it:
    from an aligned buffer straight to the disk, not through the page cache.
    The flush that durability needs anyway then has nothing left to write
    back but the file's size and extents, and the web process neither
    copies every photo into the page cache nor makes the kernel write it
    back later (cheaper and steadier than a buffered write and its flush:
    docs/performance.md, "Measured choices"). Elsewhere (tmpfs, other systems)
    the write is an ordinary one; the flush is the same.

    Names are evidence ids (UUIDs): one that exists already is an error
    (O_EXCL), never a silent rename or overwrite. ``saved`` receives each
    name as soon as its file exists, for the caller's clean-up.
    """
    file_mode = storage.file_permissions_mode
    touched: set[Path] = set()  # directories whose entries changed
    known: set[Path] = set()  # directories that exist
    for start in range(0, len(files), _SYNC_GROUP):
        descriptors: list[int] = []
        try:
            for name, content in files[start : start + _SYNC_GROUP]:
                path = Path(storage.path(name))  # refuses names outside the storage root
                if path.parent not in known:
                    touched.update(_directories_make(path.parent, mode=storage.directory_permissions_mode))
                    known.add(path.parent)
                descriptor = os.open(
                    path,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0),
                    0o666 if file_mode is None else file_mode,
                )
                descriptors.append(descriptor)
                saved.append(name)
                touched.add(path.parent)
                if file_mode is not None:
                    os.fchmod(descriptor, file_mode)  # exactly the configured mode, whatever the umask
                _write_all(descriptor, content)
            for descriptor in descriptors:
                _fdatasync(descriptor)
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
    for directory in sorted(touched):
        _directory_sync(directory)


def _write_all(descriptor: int, content: bytes) -> None:
    """Write ``content`` to the new, empty file ``descriptor``: directly if the file system allows it."""
    if _O_DIRECT and _direct_set(descriptor, on=True):
        try:
            view = _direct_buffer.holding(content)
            while view:
                view = view[os.write(descriptor, view) :]
            os.ftruncate(descriptor, len(content))  # the padding was only for the disk's sake
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # This file system wants another alignment: write it the ordinary way.
            _direct_set(descriptor, on=False)
            os.ftruncate(descriptor, 0)
            os.lseek(descriptor, 0, os.SEEK_SET)
        else:
            return
    view = memoryview(content)
    while view:
        view = view[os.write(descriptor, view) :]


def _direct_set(descriptor: int, *, on: bool) -> bool:
    """Turn direct I/O on or off for ``descriptor``; False where the file system has none."""
    flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
    try:
        fcntl.fcntl(descriptor, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return True


def _directories_make(directory: Path, *, mode: int | None) -> set[Path]:
    """Create ``directory`` and its missing parents with ``mode``; return the parents that got a new entry."""
    missing: list[Path] = []
    path = directory
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    changed: set[Path] = set()
    for path in reversed(missing):
        try:
            path.mkdir(0o777 if mode is None else mode)
        except FileExistsError:  # made concurrently
            continue
        if mode is not None:
            path.chmod(mode)  # as Django's storage does: exactly the configured mode
        changed.add(path.parent)
    return changed


def _directory_sync(directory: Path) -> None:
    """Make the directory's new entries durable (the files' own data is flushed separately)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def evidence_delete_files(*, names: list[str]) -> None:
    """Best-effort removal of files whose rows never committed."""
    storage = evidence_storage()
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            logger.exception("evidence.file_delete_failed", file=name)
