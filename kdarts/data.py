"""Datasets for search and training, read fully into memory as uint8 arrays.

Three on-disk forms are read:

- an image-folder tree, `train/<class>/*.jpg|png` with an optional `test/<class>/...` (a folder that
  holds the class folders directly is read as the training split);
- CIFAR-10 python batches (`data_batch_1` ... `data_batch_5`, `test_batch`, `batches.meta`);
- an `.npz` file with `x` (N, H, W, 3) uint8 and `y` (N,) integer arrays, and optionally `x_test`
  and `y_test`.

The name `sample` refers to the small CIFAR-10 sample that ships with the package.
"""

from __future__ import annotations

import logging
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdarts.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_NAME = "sample"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))


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
        raise DataError(f"dataset not found: {path}; pass a folder, a CIFAR-10 batches folder, an .npz file, or 'sample'")
    return path


def load_dataset(source: str | Path, *, workers: int = 4) -> Dataset:
    """Read a dataset into memory, detecting its form from the files at `source`."""
    path = resolve_dataset_path(source)
    name = SAMPLE_NAME if str(source) == SAMPLE_NAME else path.name

    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"unsupported dataset file {path}: expected an .npz with 'x' and 'y' arrays")
        dataset = _load_npz(path, name)
    elif (path / "data_batch_1").is_file() or (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        batches = path if (path / "data_batch_1").is_file() else path / "cifar-10-batches-py"
        dataset = _load_cifar_batches(batches, name)
    else:
        dataset = _load_image_folder(path, name, workers=workers)

    logger.info("loaded %s", dataset.describe())
    return dataset


def _load_image_folder(root: Path, name: str, *, workers: int) -> Dataset:
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = sorted(child.name for child in train_root.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not classes:
        raise DataError(
            f"no class folders found in {train_root}; expected train/<class>/*.jpg (or <class>/*.jpg) images"
        )

    train = _read_split(train_root, classes, workers=workers)
    test = None
    if (root / "test").is_dir() and train_root != root:
        test = _read_split(root / "test", classes, workers=workers)
        if test.images.shape[1:] != train.images.shape[1:]:
            raise DataError(
                f"test images in {root / 'test'} are {test.images.shape[1:]} but training images are "
                f"{train.images.shape[1:]}; resize one split so both match"
            )
    return Dataset(name=name, classes=classes, train=train, test=test)


def _read_split(split_root: Path, classes: list[str], *, workers: int) -> Split:
    files: list[Path] = []
    labels: list[int] = []
    for label, class_name in enumerate(classes):
        class_dir = split_root / class_name
        if not class_dir.is_dir():
            raise DataError(f"class folder {class_dir} is missing; every split needs the same class folders")
        class_files = sorted(path for path in class_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        if not class_files:
            raise DataError(f"class folder {class_dir} holds no .jpg, .jpeg or .png images")
        files.extend(class_files)
        labels.extend([label] * len(class_files))

    # Pillow releases the GIL while decoding, so a few threads cut load time on large folders.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(_read_image, files))

    first_shape = arrays[0].shape
    for path, array in zip(files, arrays):
        if array.shape != first_shape:
            raise DataError(
                f"image {path} is {array.shape[1]}x{array.shape[0]} but {files[0]} is "
                f"{first_shape[1]}x{first_shape[0]}; all images of a dataset must have one size"
            )
    return Split(images=np.stack(arrays), labels=np.asarray(labels, dtype=np.int64))


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}; replace or delete the file") from error


def _load_npz(path: Path, name: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            contents = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}") from error

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
