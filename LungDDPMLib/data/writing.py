"""Writing volumes and records completely or not at all: temporary name, read back, fsync, rename.

Under an output name there is the whole image or nothing: a crash, a cancel or a full disk never leaves a
truncated file that looks complete, and the temporaries of killed runs are recognised by name and cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, List

import numpy as np
import SimpleITK as sitk

from ..errors import DiskFullError, InputError
from .geometry import Geometry
from .suffixes import WRITE_SUFFIXES, PathLike, file_suffix

#: Temporary files this tool writes next to an output: ``.<name>.<pid>.partial<suffix>``. Nothing else is ever
#: cleaned up automatically (see :func:`clean_orphans`).
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial(?P<suffix>(\.[A-Za-z0-9]+)*)$")


def temp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before the rename (same folder, so the rename is atomic)."""
    suffix = file_suffix(path) or path.suffix
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.{os.getpid()}.partial{suffix}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (POSIX; elsewhere assumed alive, so nothing of a
    running process is ever removed)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_orphans(folder: PathLike) -> List[Path]:
    """Remove temporary files (and series folders) of this tool left in ``folder`` by processes that no longer run.

    Only names of :data:`TEMP_PATTERN` whose process id is not alive are touched; returns what was removed.
    """
    folder = Path(folder)
    removed: List[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = TEMP_PATTERN.match(entry.name)
        if m and int(m.group("pid")) != os.getpid() and not pid_alive(int(m.group("pid"))):
            try:
                if entry.is_dir() and not entry.is_symlink():  # a DICOM series folder being written
                    shutil.rmtree(entry)
                elif entry.is_file():
                    entry.unlink()
                else:
                    continue
                removed.append(entry)
            except OSError:
                pass
    return removed


def _is_disk_full(exc: BaseException) -> bool:
    text = str(exc).lower()
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "no space left" in text or "quota" in text


def disk_full_error(path: Path, detail: str) -> DiskFullError:
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    return DiskFullError(
        f"cannot write {path}: the disk is full ({free / 2**20:.0f} MiB free in {path.parent}; {detail}). "
        "Free space or choose another output folder; nothing was left under the output name"
    )


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk, so that a crash after the rename cannot leave a short file."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_voxels(a: np.ndarray, b: np.ndarray) -> bool:
    """Voxel-for-voxel equality; NaN equals NaN (a float volume written with NaN reads back with NaN)."""
    return bool(np.array_equal(a, b, equal_nan=bool(np.issubdtype(a.dtype, np.floating))))


def _verify_written(image: sitk.Image, tmp: Path, path: Path) -> None:
    """Read the temporary file back and compare it with what was meant to be written.

    ITK's writers may only print an error when the disk fills (the NIfTI writer does) and leave a short file
    that reads without error; comparing the voxels is the one check that always catches it.
    """
    try:
        back = sitk.ReadImage(str(tmp))
        same = (
            back.GetSize() == image.GetSize()
            and back.GetPixelID() == image.GetPixelID()
            and Geometry.of(back).matches(Geometry.of(image), tol=1e-4)
            and _same_voxels(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
        )
    except RuntimeError:
        same = False
    if not same:
        free = shutil.disk_usage(tmp.parent).free
        if free < 2 * tmp.stat().st_size + (1 << 20):
            raise disk_full_error(path, "the written file did not read back complete")
        raise OSError(f"cannot write {path}: the file written did not read back as the image (I/O error?)")


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """The temporary name ``path`` is written under: removed unless it was renamed into place, and an out-of-space
    failure on the way is reported as :class:`DiskFullError`."""
    tmp = temp_path(path)
    try:
        yield tmp
    except OSError as exc:
        if _is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, str(exc)) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_image(image: sitk.Image, path: PathLike, compress: bool = True) -> Path:
    """Write NRRD (.nrrd, .seg.nrrd), NIfTI (.nii, .nii.gz) or MetaImage (.mha); returns the path.

    The file is written under a temporary name in the same folder, read back and compared with the image,
    flushed to the disk and only then renamed into place: under the final name there is the whole image or
    nothing (a crash, a cancel or a full disk never leaves a truncated file that looks complete).

    Raises:
        InputError: an extension that cannot be written. DiskFullError: no room (or the written file came back
        short on a nearly full disk). OSError: any other write failure.
    """
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"cannot write {path}: choose one of {', '.join(WRITE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _staged(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress and suffix != ".nii")
        except RuntimeError as exc:
            # ITK's messages rarely say why ("failed to write to file"): a disk without room for the raw voxels is.
            raw = image.GetNumberOfPixels() * image.GetSizeOfPixelComponent() * image.GetNumberOfComponentsPerPixel()
            if _is_disk_full(exc) or shutil.disk_usage(path.parent).free < raw:
                raise disk_full_error(path, "the writer failed") from None
            raise OSError(f"cannot write {path}: {str(exc).strip().splitlines()[-1][:200]}") from None
        _verify_written(image, tmp, path)
        fsync_file(tmp)
        os.replace(tmp, path)
    return path


def write_text_atomic(text: str, path: PathLike) -> Path:
    """Write a small text file (a JSON record) completely or not at all: temporary name, fsync, rename."""
    path = Path(path)
    with _staged(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return path
