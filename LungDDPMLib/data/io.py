"""Reading and writing volumes with SimpleITK, keeping the geometry exact.

Users bring CTs as NRRD, NIfTI, MetaImage or a DICOM series folder, with any spacing and orientation. The
result has to go back to them on exactly the same grid, so the :class:`Geometry` of every input is captured
and compared, and everything that goes wrong while reading becomes an :class:`InputError` that names the
file and says what to do, instead of an ITK traceback.

Precision: NRRD and MetaImage store geometry as decimal text and round-trip to ~1e-15; NIfTI stores it in
float32, so spacing/origin/direction round-trip to ~1e-7 relative.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import DiskFullError, InputError
from .validation import check_ct_intensities, check_dimension, check_memory, warn

PathLike = Union[str, Path]
READ_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
WRITE_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".mha")


def file_suffix(path: PathLike) -> str:
    """The recognised (possibly double) suffix of ``path`` in lower case, or its last suffix."""
    name = Path(path).name.lower()
    for suffix in READ_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def strip_suffix(path: PathLike) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``, ``b.seg.nrrd`` -> ``b``)."""
    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix and name.lower().endswith(suffix) else name


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels are in patient space (SimpleITK conventions, LPS, (x, y, z) order)."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Stamp this geometry on ``image`` (whose size must match) and return it."""
        if tuple(image.GetSize()) != self.size:
            raise InputError(f"array of size {image.GetSize()} cannot take the geometry of size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image from a ``(z, y, x)`` array with this geometry."""
        return self.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))

    def matches(self, other: Geometry, tol: float = 1e-4) -> bool:
        """Same grid up to ``tol`` (relative for spacing, mm for origin, absolute for direction)."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=0)
            and np.allclose(self.origin, other.origin, atol=tol * max(1.0, max(self.spacing)))
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Physical points of continuous ``(x, y, z)`` indices, shape (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Axis-aligned physical box around the voxel centres (for overlap checks and messages)."""
        n = np.asarray(self.size) - 1
        corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
        pts = self.index_to_physical(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Geometry:
        return cls(
            tuple(int(v) for v in data["size"]),
            tuple(float(v) for v in data["spacing"]),
            tuple(float(v) for v in data["origin"]),
            tuple(float(v) for v in data["direction"]),
        )

    def describe(self) -> str:
        lo, hi = self.physical_bounds()
        return (
            f"size {self.size}, spacing {tuple(round(s, 4) for s in self.spacing)} mm, "
            f"extent {np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} mm"
        )


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    try:
        probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
        return int(sitk.GetArrayViewFromImage(probe).dtype.itemsize) * reader.GetNumberOfComponents()
    except RuntimeError:
        return 8


# deflate (gzip, zlib) cannot compress better than about 1032:1, even all zeros; above this ratio the header lies.
DEFLATE_MAX_RATIO = 1100


def _payload_and_encoding(path: Path) -> Tuple[Optional[Path], str]:
    """The file that holds the voxels and how they are stored: ``raw``, ``deflate`` or ``other`` (not checked).

    Only the text header is read (NRRD ``encoding``/``data file``, MetaImage ``CompressedData``/
    ``ElementDataFile``); a list or pattern of data files gives ``None`` (not checked).
    """
    suffix = file_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        return path, "raw" if suffix == ".nii" else "deflate"
    with open(path, "rb") as fh:
        head = fh.read(1 << 16).decode("latin-1").split("\n\n", 1)[0]
    sep = ":" if suffix in (".nrrd", ".seg.nrrd", ".nhdr") else "="
    fields = {}
    for line in head.splitlines():
        key, found, value = line.partition(sep)
        if found and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip()
    if sep == ":":
        encoding = {"raw": "raw", "gz": "deflate", "gzip": "deflate"}.get(fields.get("encoding", "raw"), "other")
        data = fields.get("data file", fields.get("datafile"))
    else:
        encoding = "deflate" if fields.get("compresseddata", "false").lower() == "true" else "raw"
        data = fields.get("elementdatafile", "LOCAL")
        data = None if data == "LOCAL" else data
    if data is None:
        return path, encoding
    if " " in data or "%" in data or data.upper().startswith("LIST"):
        return None, encoding
    return path.parent / data, encoding


def _check_header_against_file_size(path: Path, reader: sitk.ImageFileReader) -> None:
    """Refuse a header that claims more voxels than its file can hold, before anything is allocated.

    A damaged or hostile header (say 1200^3 float32 over a 1 KB payload) would otherwise make ITK allocate
    gigabytes and only then fail. Uncompressed data must be at least voxels x bytes per voxel long; deflate-
    compressed data (``.nii.gz``, gzip NRRD, compressed MetaImage) at least that / :data:`DEFLATE_MAX_RATIO`,
    a bound no valid file can break. Other encodings (ASCII, hex, bzip2) and file lists are not checked.
    """
    payload, encoding = _payload_and_encoding(path)
    if payload is None or encoding == "other" or not payload.is_file():
        return
    needed = int(np.prod(reader.GetSize())) * _bytes_per_voxel(reader)
    have = payload.stat().st_size
    limit = have if encoding == "raw" else have * DEFLATE_MAX_RATIO
    if needed > limit:
        stored = "uncompressed" if encoding == "raw" else f"gzip-compressed (at most {DEFLATE_MAX_RATIO}:1)"
        raise InputError(
            f"cannot read {path}: its header claims {reader.GetSize()} voxels ({needed:,} bytes) but the "
            f"{stored} data in {payload.name} is only {have:,} bytes; the file is truncated or its header is "
            "wrong - export the image again"
        )


def header_size(path: PathLike) -> Optional[Tuple[int, int]]:
    """``(voxels, bytes per voxel)`` from an image file's header, without reading the voxels; ``None`` for DICOM
    folders and unreadable headers (reading the image reports those properly)."""
    p = Path(path)
    if not p.is_file() or file_suffix(p) == ".dcm":
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return int(np.prod(reader.GetSize())), _bytes_per_voxel(reader)


def _read_file(path: Path, allow_multicomponent: bool) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read {path}: not a valid {file_suffix(path)} image or the file is corrupt "
            f"({str(exc).strip().splitlines()[-1][:200]})"
        ) from None
    _check_header_against_file_size(path, reader)
    n_voxels = int(np.prod(reader.GetSize()))
    check_memory(n_voxels * _bytes_per_voxel(reader) * 3, f"reading {path.name} ({reader.GetSize()})")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read the voxels of {path}: the file is truncated or corrupt "
            f"({str(exc).strip().splitlines()[-1][:200]})"
        ) from None
    if not allow_multicomponent:
        check_dimension(image, str(path))
    return image


def read_dicom_series(folder: PathLike) -> sitk.Image:
    """Read the DICOM series in ``folder`` (the largest one if there are several, with a warning)."""
    folder = Path(folder)
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series = ()
    if not series:
        raise InputError(
            f"no DICOM series found in folder {folder}; point to the folder that holds the "
            "slice files, or give an image file (.nrrd, .nii.gz, .mha)"
        )
    files = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    chosen = max(series, key=lambda sid: len(files[sid]))
    if len(series) > 1:
        warn(
            f"{folder} holds {len(series)} DICOM series; using {chosen} ({len(files[chosen])} files). "
            "Put each series in its own folder to choose another."
        )
    if len(files[chosen]) < 2:
        raise InputError(f"the DICOM series in {folder} has a single slice; LungDDPM needs a 3D series")
    first = sitk.ImageFileReader()
    first.SetFileName(files[chosen][0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read {files[chosen][0]}: {str(exc).strip().splitlines()[-1][:200]}") from None
    n_voxels = int(np.prod(first.GetSize()[:2])) * len(files[chosen])
    check_memory(n_voxels * _bytes_per_voxel(first) * 3, f"reading the DICOM series in {folder}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read the DICOM series in {folder}: {str(exc).strip().splitlines()[-1][:200]}"
        ) from None
    check_dimension(image, f"the DICOM series in {folder}")
    return image


def read_image(path: PathLike, allow_multicomponent: bool = False) -> sitk.Image:
    """Read a 3D volume from NRRD, NIfTI, MetaImage or a DICOM series folder, geometry intact.

    ``allow_multicomponent`` lets Slicer's layered 4D ``.seg.nrrd`` through; everything else must be a
    single-component 3D volume.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        return read_dicom_series(path)
    suffix = file_suffix(path)
    if suffix not in READ_SUFFIXES and suffix != ".dcm":
        raise InputError(
            f"unsupported file type {suffix or '(none)'} for {path}; use "
            f"{', '.join(READ_SUFFIXES)} or a DICOM series folder"
        )
    if suffix == ".dcm":
        return read_dicom_series(path.parent)
    return _read_file(path, allow_multicomponent)


def read_ct(path: PathLike, check_intensities: bool = True) -> sitk.Image:
    """Read a CT and check that it is a 3D volume in Hounsfield units."""
    image = read_image(path)
    if check_intensities:
        check_ct_intensities(image, f"the CT {Path(path).name}")
    return image


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
    """Remove temporary files of this tool left in ``folder`` by processes that no longer run (a killed run).

    Only names of :data:`TEMP_PATTERN` whose process id is not alive are touched; returns what was removed.
    """
    folder = Path(folder)
    removed: List[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = TEMP_PATTERN.match(entry.name)
        if m and entry.is_file() and int(m.group("pid")) != os.getpid() and not pid_alive(int(m.group("pid"))):
            try:
                entry.unlink()
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


def same_geometry(images: Sequence[sitk.Image], tol: float = 1e-4) -> bool:
    first = Geometry.of(images[0])
    return all(first.matches(Geometry.of(img), tol) for img in images[1:])
