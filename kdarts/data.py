"""Datasets for search and training, read fully into memory as uint8 arrays.

Four on-disk forms are read:

- an image-folder tree, `train/<class>/*.jpg|png` with an optional `test/<class>/...` (a folder that
  contains the class folders directly is read as the training split);
- the same tree inside a `.tar.gz`, `.tgz`, `.tar` or `.zip` archive, read from the archive without
  extracting it to disk (the tree may sit under one top-level folder);
- CIFAR-10 python batches (`data_batch_1` ... `data_batch_5`, `test_batch`, `batches.meta`);
- an `.npz` file with `x` (N, H, W, 3) uint8 and `y` (N,) integer arrays, and optionally `x_test`
  and `y_test`.

The name `sample` refers to the small CIFAR-10 sample that ships with the package. Class names
are the sorted class folder names, and images within a class are sorted by file name, so a tree
and an archive of it give the same arrays.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import tarfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdarts.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_NAME = "sample"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
DECODE_CHUNK = 256
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Split:
    """Images of one split as `(N, H, W, 3)` uint8 and their integer labels `(N,)`."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """A dataset in memory: the training split, an optional test split and the class names."""

    name: str
    classes: list[str]
    train: Split
    test: Split | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def describe(self) -> str:
        height, width, _ = self.image_shape
        test_count = len(self.test) if self.test is not None else 0
        return (
            f"{self.name}: {len(self.train)} training and {test_count} test images, "
            f"{len(self.classes)} classes, {height}x{width}"
        )


@dataclass(frozen=True)
class _ImageSource:
    """One image to decode: a file on disk, or the bytes of an archive member."""

    location: str
    label: int
    path: Path | None = None
    data: bytes | None = None


def sample_path() -> Path:
    """Return the folder of the CIFAR-10 sample that ships with the package."""
    path = Path(__file__).parent / "datasets" / "sample"
    if not (path / "train").is_dir():
        raise DataError(
            f"the bundled sample dataset is missing from {path}; reinstall kdarts, or pass --data with "
            "a dataset folder"
        )
    return path


def resolve_dataset_path(source: str | Path) -> Path:
    """Map a `--data` value to a path: the name `sample`, or an existing file or folder."""
    if str(source) == SAMPLE_NAME:
        return sample_path()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset not found: {path}; pass an image folder, a .tar.gz, .tgz or .zip archive of one, "
            "a CIFAR-10 batches folder, an .npz file, or 'sample'"
        )
    return path


def archive_suffix(path: Path) -> str | None:
    """Return the archive suffix of `path` (such as `.tar.gz`), or None when it is no archive."""
    name = path.name.lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if name.endswith(suffix)), None)


def load_dataset(source: str | Path, *, workers: int = 4) -> Dataset:
    """Read a dataset into memory, detecting its form from the files at `source`."""
    path = resolve_dataset_path(source)

    if path.is_file():
        suffix = archive_suffix(path)
        if suffix is not None:
            dataset = _load_archive(path, path.name[: -len(suffix)], workers=workers)
        elif path.suffix.lower() == ".npz":
            dataset = _load_npz(path, path.stem)
        else:
            raise DataError(
                f"unsupported dataset file {path}: expected an .npz with 'x' and 'y' arrays or a "
                f"{', '.join(ARCHIVE_SUFFIXES)} archive of an image-folder tree"
            )
    elif (path / "data_batch_1").is_file() or (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        batches = path if (path / "data_batch_1").is_file() else path / "cifar-10-batches-py"
        dataset = _load_cifar_batches(batches, path.name)
    else:
        name = SAMPLE_NAME if str(source) == SAMPLE_NAME else path.name
        dataset = _load_image_folder(path, name, workers=workers)

    logger.info("loaded %s", dataset.describe())
    return dataset


# Image folders ----------------------------------------------------------------------------------


def _load_image_folder(root: Path, name: str, *, workers: int) -> Dataset:
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = sorted(child.name for child in train_root.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not classes:
        raise DataError(
            f"no class folders found in {train_root}; expected train/<class>/*.jpg (or <class>/*.jpg) images"
        )

    train = _decode_split(_folder_sources(train_root, classes), workers=workers)
    test = None
    if (root / "test").is_dir() and train_root != root:
        test = _decode_split(_folder_sources(root / "test", classes), workers=workers)
        _check_same_shape(train, test, str(root / "test"))
    return Dataset(name=name, classes=classes, train=train, test=test)


def _folder_sources(split_root: Path, classes: list[str]) -> list[_ImageSource]:
    sources: list[_ImageSource] = []
    for label, class_name in enumerate(classes):
        class_dir = split_root / class_name
        if not class_dir.is_dir():
            raise DataError(f"class folder {class_dir} is missing; every split needs the same class folders")
        class_files = sorted(path for path in class_dir.iterdir() if _is_image_name(path.name))
        if not class_files:
            raise DataError(f"class folder {class_dir} contains no .jpg, .jpeg or .png images")
        sources.extend(_ImageSource(location=str(path), label=label, path=path) for path in class_files)
    return sources


# Archives ---------------------------------------------------------------------------------------


def _load_archive(path: Path, name: str, *, workers: int) -> Dataset:
    images, folders = _read_archive(path)
    if not images:
        raise DataError(f"archive {path} contains no .jpg, .jpeg or .png images; expected train/<class>/*.jpg inside")

    prefix, has_splits = _archive_root(path, images)
    train_prefix = (*prefix, "train") if has_splits else prefix
    classes = _archive_classes(path, images, folders, train_prefix)

    train = _decode_split(_archive_sources(path, images, train_prefix, classes), workers=workers)
    test = None
    test_prefix = (*prefix, "test")
    if has_splits and any(parts[:-2] == test_prefix for parts in images):
        test = _decode_split(_archive_sources(path, images, test_prefix, classes), workers=workers)
        _check_same_shape(train, test, f"{path}:{'/'.join(test_prefix)}")
    return Dataset(name=name, classes=classes, train=train, test=test)


def _read_archive(path: Path) -> tuple[dict[tuple[str, ...], bytes], set[tuple[str, ...]]]:
    """Return the image members of an archive as {path parts: bytes} and its folders' path parts."""
    images: dict[tuple[str, ...], bytes] = {}
    folders: set[tuple[str, ...]] = set()
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    parts = _member_parts(info.filename)
                    if info.is_dir():
                        folders.add(parts)
                    elif _is_archive_image(parts):
                        images[parts] = _read_member(path, info.filename, lambda: archive.read(info))
        else:
            with path.open("rb") as raw:
                gzipped = raw.read(2) == GZIP_MAGIC
                raw.seek(0)
                stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
                # Stream mode ("r|") reads the file once, front to back, without seeking.
                with tarfile.open(fileobj=stream, mode="r|" if gzipped else "r|*") as archive:
                    for member in archive:
                        parts = _member_parts(member.name)
                        if member.isdir():
                            folders.add(parts)
                        elif member.isfile() and _is_archive_image(parts):
                            file = archive.extractfile(member)
                            if file is not None:
                                images[parts] = _read_member(path, member.name, file.read)
                # tarfile stops quietly at a cut-off header, so the rest of a gzip stream is read
                # to its end-of-stream marker and checksum, which catches a truncated download.
                while stream.read(1 << 20):
                    pass
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise DataError(f"cannot read archive {path}: {error}; check that the file is complete") from error

    # Folders are also implied by the members inside them.
    for parts in images:
        folders.update(parts[:index] for index in range(1, len(parts)))
    return images, folders


def _read_member(archive: Path, member: str, read: object) -> bytes:
    try:
        return read()  # type: ignore[operator]
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise DataError(f"cannot read {archive}:{member}: {error}; the archive is damaged") from error


def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in PurePosixPath(name).parts if part not in ("", ".", "/"))


def _is_archive_image(parts: tuple[str, ...]) -> bool:
    # macOS zips carry resource forks under __MACOSX/ and in ._ files; neither is an image.
    return bool(parts) and "__MACOSX" not in parts and _is_image_name(parts[-1])


def _archive_root(path: Path, images: dict[tuple[str, ...], bytes]) -> tuple[tuple[str, ...], bool]:
    """Return the folder holding the tree inside the archive, and whether it has split folders."""
    split_roots = {parts[:-3] for parts in images if len(parts) >= 3 and parts[-3] == "train"}
    if len(split_roots) > 1:
        listed = ", ".join(sorted("/".join((*root, "train")) for root in split_roots))
        raise DataError(f"archive {path} contains several train/ folders ({listed}); pack one dataset per archive")
    if split_roots:
        return split_roots.pop(), True

    class_roots = {parts[:-2] for parts in images if len(parts) >= 2}
    if len(class_roots) != 1:
        raise DataError(
            f"archive {path} has no train/<class>/ folders and its images do not share one parent of "
            "class folders; expected train/<class>/*.jpg (or <class>/*.jpg) inside"
        )
    return class_roots.pop(), False


def _archive_classes(
    path: Path,
    images: dict[tuple[str, ...], bytes],
    folders: set[tuple[str, ...]],
    train_prefix: tuple[str, ...],
) -> list[str]:
    depth = len(train_prefix)
    classes = sorted(
        parts[depth]
        for parts in folders
        if len(parts) == depth + 1 and parts[:depth] == train_prefix and not parts[depth].startswith(".")
    )
    if not classes:
        raise DataError(f"no class folders found in {path}:{'/'.join(train_prefix)}; expected train/<class>/*.jpg")
    return classes


def _archive_sources(
    path: Path, images: dict[tuple[str, ...], bytes], split_prefix: tuple[str, ...], classes: list[str]
) -> list[_ImageSource]:
    by_class: dict[str, list[tuple[str, bytes]]] = {class_name: [] for class_name in classes}
    depth = len(split_prefix)
    for parts, data in images.items():
        if len(parts) == depth + 2 and parts[:depth] == split_prefix and parts[depth] in by_class:
            by_class[parts[depth]].append((parts[-1], data))

    sources: list[_ImageSource] = []
    for label, class_name in enumerate(classes):
        location = f"{path}:{'/'.join((*split_prefix, class_name))}"
        members = sorted(by_class[class_name])
        if not members:
            raise DataError(
                f"class folder {location} is missing or contains no .jpg, .jpeg or .png images; every split "
                "needs an image in each class folder"
            )
        sources.extend(
            _ImageSource(location=f"{location}/{file_name}", label=label, data=data) for file_name, data in members
        )
    return sources


# Decoding ---------------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _decode_split(sources: list[_ImageSource], *, workers: int) -> Split:
    # Pillow releases the GIL while decoding, so a few threads cut load time on large datasets.
    # Images go to the threads in chunks because a future per 32x32 image costs about as much
    # as decoding it.
    chunks = [sources[start : start + DECODE_CHUNK] for start in range(0, len(sources), DECODE_CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = [array for chunk in pool.map(_read_images, chunks) for array in chunk]

    first_shape = arrays[0].shape
    for source, array in zip(sources, arrays):
        if array.shape != first_shape:
            raise DataError(
                f"image {source.location} is {array.shape[1]}x{array.shape[0]} but {sources[0].location} is "
                f"{first_shape[1]}x{first_shape[0]}; all images of a dataset must have one size"
            )
    labels = np.asarray([source.label for source in sources], dtype=np.int64)
    return Split(images=np.stack(arrays), labels=labels)


def _read_images(sources: list[_ImageSource]) -> list[np.ndarray]:
    return [_read_image(source) for source in sources]


def _read_image(source: _ImageSource) -> np.ndarray:
    try:
        opened = Image.open(source.path if source.path is not None else io.BytesIO(source.data or b""))
        with opened as image:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {source.location}: {error}; replace or delete the file") from error


def _check_same_shape(train: Split, test: Split, test_location: str) -> None:
    if test.images.shape[1:] != train.images.shape[1:]:
        raise DataError(
            f"test images in {test_location} are {test.images.shape[1:]} but training images are "
            f"{train.images.shape[1:]}; resize one split so both match"
        )


# Arrays -----------------------------------------------------------------------------------------


def _load_npz(path: Path, name: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            contents = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path}: {error}; check that the file is a complete .npz") from error

    for key in ("x", "y"):
        if key not in contents:
            raise DataError(f"{path} has no '{key}' array (found: {', '.join(sorted(contents)) or 'none'})")

    train = _split_from_arrays(contents["x"], contents["y"], f"{path} ['x'], ['y']")
    test = None
    if "x_test" in contents or "y_test" in contents:
        if "x_test" not in contents or "y_test" not in contents:
            raise DataError(f"{path} needs both 'x_test' and 'y_test' or neither")
        test = _split_from_arrays(contents["x_test"], contents["y_test"], f"{path} ['x_test'], ['y_test']")

    class_count = int(max(train.labels.max(), test.labels.max() if test is not None else 0)) + 1
    return Dataset(name=name, classes=[str(index) for index in range(class_count)], train=train, test=test)


def _split_from_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> Split:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{where}: images must have shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels; the arrays must have equal length")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise DataError(f"{where}: labels must be non-negative integers, got dtype {labels.dtype}")
    return Split(images=images, labels=labels.astype(np.int64))


def _load_cifar_batches(folder: Path, name: str) -> Dataset:
    train_parts = [_read_cifar_batch(folder / batch) for batch in CIFAR_TRAIN_BATCHES]
    train = Split(
        images=np.concatenate([part.images for part in train_parts]),
        labels=np.concatenate([part.labels for part in train_parts]),
    )
    test = _read_cifar_batch(folder / "test_batch") if (folder / "test_batch").is_file() else None

    classes = [str(index) for index in range(10)]
    meta_path = folder / "batches.meta"
    if meta_path.is_file():
        with meta_path.open("rb") as file:
            meta = pickle.load(file, encoding="bytes")
        classes = [label.decode() if isinstance(label, bytes) else str(label) for label in meta[b"label_names"]]
    return Dataset(name=name, classes=classes, train=train, test=test)


def _read_cifar_batch(path: Path) -> Split:
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {path} is missing; a batches folder needs data_batch_1 to data_batch_5")
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as error:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {error}") from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"CIFAR-10 batch {path}: data has shape {data.shape}, expected (N, 3072)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _split_from_arrays(np.ascontiguousarray(images), labels, str(path))
