"""Files written and read by pyxbraid.nn: atomic writes and a careful ``.npz`` reader.

Every output (models, checkpoints, metrics, plots) goes through :func:`atomic_write`:
the bytes land in a fresh temporary file in the destination's folder, which is
then renamed over the destination. A reader never sees half a file, a job
killed mid-write leaves the previous file intact, and a symbolic link planted
at the destination is replaced, never followed (``rename`` does not follow a
link at its target; the temporary file is created with ``O_EXCL | O_NOFOLLOW``).

:class:`NpzReader` reads ``.npz`` archives written by ``numpy.savez`` without
trusting them: member names, compression, the ``.npy`` headers (shape,
dtype) and the declared sizes are checked against what the caller expects
*before* any array data is decompressed or allocated, so a small crafted file
cannot make the reader allocate gigabytes, and no pickle is ever loaded.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["NpzReader", "atomic_write", "check_writable"]

# Deflate cannot expand data by more than about 1032:1 (a run of equal bytes
# costs at least 2 bits per 258-byte match); a member declaring more is lying.
_DEFLATE_MAX_RATIO = 1032
_NPY_MAGIC = b"\x93NUMPY"


def _open_exclusive(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new, empty file next to ``name`` (mode 0666 & ~umask, like open())."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {folder}")  # pragma: no cover


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through a temporary file in its folder and rename it into place.

    Parameters
    ----------
    path : str or os.PathLike
        The destination. Its folder must exist. A symbolic link at the
        destination is replaced by the new file (its target is untouched); a
        directory there is an error.
    write : callable(file)
        Writes the content to the open binary file it is given.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    IsADirectoryError
        ``path`` is a directory.
    OSError
        The folder is missing or not writable, the disk is full, ... The
        destination is then unchanged and no temporary file is left behind.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from pyxbraid.nn._files import atomic_write
    >>> path = Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = atomic_write(path, lambda f: f.write(b"hello"))
    >>> path.read_text()
    'hello'
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a directory")
    folder = path.parent
    fd, tmp = _open_exclusive(folder, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic; replaces a link at path instead of following it
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (best effort)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def check_writable(path: str | os.PathLike[str], what: str, *, folder: bool = False) -> Path:
    """Create ``path`` (a folder) or its parent folder and prove it writable by writing a probe file.

    Raises an OSError (or NotADirectoryError / IsADirectoryError) naming
    ``what`` and the path, before any expensive work is done.
    """
    path = Path(path)
    target = path if folder else path.parent
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} exists and is not a directory")
    if not folder and path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{what} {str(path)!r} is a directory")
    for ancestor in [target, *target.parents]:  # the folder cannot be created under a file
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(f"{what} {str(path)!r}: {str(ancestor)!r} is not a directory")
            break
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_exclusive(target, "probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"{what} {str(path)!r}: cannot write in {str(target)!r} ({exc.strerror or exc})"
        ) from None
    return path


class NpzReader:
    """Read a ``numpy.savez`` archive, checking every member before reading its data.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file should be (for messages): ``"pyxbraid.nn.ResNet file"``.

    Raises
    ------
    OSError
        The file cannot be opened (missing, a directory, no permission).
    ValueError
        Anything wrong with the content, naming the file and the member.
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path, self.what = Path(path), what
        try:
            self._zip = zipfile.ZipFile(self.path)  # OSError for a missing file stays an OSError
        except (zipfile.BadZipFile, ValueError, EOFError, OverflowError) as exc:
            raise self.error(f"not a zip archive ({type(exc).__name__}: {exc})") from None
        except OSError:
            raise
        except Exception as exc:  # e.g. struct errors from a mangled directory
            raise self.error(f"unreadable zip archive ({type(exc).__name__}: {exc})") from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            if not info.filename.endswith(".npy"):
                self.close()
                raise self.error(f"unexpected member {info.filename!r} (not a .npy array)")
            name = info.filename[:-4]
            if name in self.members:
                self.close()
                raise self.error(f"member {info.filename!r} appears twice")
            self.members[name] = info

    # -- context manager -----------------------------------------------------------
    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()

    def error(self, message: str) -> ValueError:
        """Return the ValueError for ``message``, naming the file and what it should be."""
        return ValueError(f"{str(self.path)!r} is not a valid {self.what}: {message}")

    # -- members ---------------------------------------------------------------------
    def require_members(self, expected: set[str]) -> None:
        """Check that the archive holds exactly these arrays (ValueError naming the missing or unexpected ones)."""
        missing = sorted(expected - set(self.members))
        unknown = sorted(set(self.members) - expected)
        if missing:
            raise self.error(f"missing array(s) {', '.join(map(repr, missing))}")
        if unknown:
            raise self.error(f"unexpected array(s) {', '.join(map(repr, unknown))}")

    def _open(self, name: str) -> tuple[Any, tuple[int, ...], bool, np.dtype, int, zipfile.ZipInfo]:
        """Open a member and parse its .npy header: (stream, shape, fortran_order, dtype, data bytes, info)."""
        if name not in self.members:
            raise self.error(f"missing array {name!r}")
        info = self.members[name]
        if info.flag_bits & 0x1:
            raise self.error(f"array {name!r} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise self.error(
                    f"array {name!r} is stored uncompressed but declares {info.file_size} bytes in {info.compress_size}"
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
                raise self.error(
                    f"array {name!r} declares {info.file_size} bytes from {info.compress_size} "
                    "compressed bytes, more than deflate can produce"
                )
        else:
            raise self.error(f"array {name!r} uses an unsupported compression (method {info.compress_type})")
        try:
            stream = self._zip.open(info)
        except Exception as exc:
            raise self.error(f"array {name!r}: {type(exc).__name__}: {exc}") from None
        try:
            magic = stream.read(len(_NPY_MAGIC) + 2)
            if len(magic) != len(_NPY_MAGIC) + 2 or not magic.startswith(_NPY_MAGIC):
                raise ValueError("no .npy magic string")
            version = (magic[-2], magic[-1])
            if version == (1, 0):
                read_header = np.lib.format.read_array_header_1_0
            elif version == (2, 0):
                read_header = np.lib.format.read_array_header_2_0
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            shape, fortran, dtype = read_header(stream, max_header_size=10000)
            header_bytes = stream.tell()
        except Exception as exc:
            stream.close()
            raise self.error(f"array {name!r} has no valid .npy header ({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            stream.close()
            raise self.error(f"array {name!r} holds Python objects (dtype {dtype}); pickles are never loaded")
        if any((not isinstance(n, int)) or n < 0 for n in shape):
            stream.close()
            raise self.error(f"array {name!r} has an invalid shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != header_bytes + nbytes:
            stream.close()
            raise self.error(
                f"array {name!r} declares shape {shape} and dtype {dtype} ({nbytes} bytes) but its "
                f"member holds {info.file_size - header_bytes} bytes of data"
            )
        return stream, shape, fortran, dtype, nbytes, info

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """Return the shape and dtype a member declares (no data read)."""
        stream, shape, _, dtype, _, _ = self._open(name)
        stream.close()
        return shape, dtype

    def read_float64(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Read a float64 array of exactly ``shape`` (checked before any data is read)."""
        stream, got, fortran, dtype, nbytes, _ = self._open(name)
        with stream:
            if dtype.kind != "f" or dtype.itemsize != 8 or dtype.fields is not None or dtype.subdtype is not None:
                raise self.error(f"array {name!r} must be float64, got dtype {dtype}")
            if tuple(got) != tuple(shape):
                raise self.error(f"array {name!r} must have shape {tuple(shape)}, got {tuple(got)}")
            return self._read_data(stream, name, shape, fortran, dtype, nbytes)

    def read_text(self, name: str, max_chars: int) -> str:
        """Read a 0-d unicode array (a string) of at most ``max_chars`` characters."""
        stream, shape, fortran, dtype, nbytes, _ = self._open(name)
        with stream:
            if dtype.kind != "U" or shape != ():
                raise self.error(
                    f"array {name!r} must be a string (0-d unicode array), got dtype {dtype}, shape {shape}"
                )
            if dtype.itemsize > 4 * max_chars:
                raise self.error(f"array {name!r} is longer than {max_chars} characters")
            arr = self._read_data(stream, name, shape, fortran, dtype, nbytes)
        try:
            return str(arr[()])
        except Exception as exc:
            raise self.error(f"array {name!r} is not valid text ({type(exc).__name__})") from None

    def read_json(self, name: str, max_chars: int = 1 << 20) -> Any:
        """Read a JSON document stored as a string member."""
        text = self.read_text(name, max_chars)
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise self.error(f"array {name!r} is not valid JSON ({type(exc).__name__}: {exc})") from None

    def _read_data(
        self, stream: Any, name: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, nbytes: int
    ) -> np.ndarray:
        flat = np.empty(nbytes // dtype.itemsize if dtype.itemsize else 0, dtype=dtype)
        view = flat.view(np.uint8).data if nbytes else memoryview(b"")
        pos = 0
        try:
            while pos < nbytes:
                got = stream.readinto(view[pos : pos + (1 << 24)])
                if not got:
                    raise EOFError(f"data ends after {pos} of {nbytes} bytes")
                pos += got
            stream.read(1)  # reach the member's end: zipfile checks the CRC there
        except Exception as exc:
            raise self.error(f"array {name!r} is damaged ({type(exc).__name__}: {exc})") from None
        arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
        if dtype.byteorder not in ("=", "|") and dtype.byteorder != ("<" if np.little_endian else ">"):
            arr = arr.astype(dtype.newbyteorder("="))
        return arr if arr.flags.c_contiguous else np.array(arr, order="C")
