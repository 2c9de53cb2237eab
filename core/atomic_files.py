"""Files that appear whole or not at all: write beside the target, fsync, rename.

A crash or a kill at any moment leaves either the previous file or the new one, never a
partial file, and no temporary file survives a failure that Python sees.
"""
import contextlib
import glob
import json
import os
import tempfile

TEMP_PREFIX = ".tmp_"


class StorageError(OSError):
    """A file of the run cannot be written (full disk, read-only folder, a file where a folder belongs).

    One line naming the path and the reason; whatever was there before is left intact.
    """


def storage_error(path: str, err: OSError) -> StorageError:
    reason = err.strerror or str(err)
    return StorageError(err.errno, f"{path}: cannot write ({reason}); the previous version, if any, is intact")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.basename(path), dir=directory)
    except OSError as err:
        raise storage_error(path, err) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except StorageError:
        raise
    except OSError as err:
        raise storage_error(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(directory)


def atomic_write(path: str, write) -> None:
    """Call ``write(fileobj)`` on a temporary file and put it in place atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)


def atomic_write_json(path: str, data) -> None:
    """``data`` as indented JSON at ``path``, put in place atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def remove_orphaned_temp_files(directory: str) -> int:
    """Delete temporary files a killed writer left in ``directory`` (SIGKILL cannot be cleaned up after).

    Call it only when no other writer uses the folder. Returns how many were removed.
    """
    orphans = glob.glob(os.path.join(glob.escape(directory), TEMP_PREFIX + "*"))
    for path in orphans:
        os.remove(path)
    return len(orphans)
