"""Dataset readers: image folders, archives of them, CIFAR-10 batches and .npz files, and their errors."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdarts.data import load_dataset
from kdarts.errors import DataError

CLASSES = ("cat", "dog", "frog")


def write_image(path: Path, value: int, size: tuple[int, int] = (8, 8), image_format: str = "PNG") -> None:
    """Write a small RGB image whose pixels encode `value`, so tests can tell images apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[0, 0] = (value, 255 - value, 7)
    Image.fromarray(pixels).save(path, format=image_format)


def make_tree(root: Path, *, test: bool = True, per_class: int = 3) -> Path:
    """Build `train/<class>/NNNN.png` (and `test/...`) with distinct pixel values per image."""
    for split, count in (("train", per_class), ("test", 2)):
        if split == "test" and not test:
            continue
        for label, class_name in enumerate(CLASSES):
            for index in range(count):
                write_image(root / split / class_name / f"{index:04d}.png", 10 * label + index + (100 if split == "test" else 0))
    return root


def tar_tree(root: Path, archive: Path, *, arcname: str = ".", mode: str = "w:gz") -> Path:
    with tarfile.open(archive, mode) as tar:
        tar.add(root, arcname=arcname)
    return archive


def zip_tree(root: Path, archive: Path, *, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(root.rglob("*")):
            name = prefix + path.relative_to(root).as_posix()
            if path.is_dir():
                bundle.writestr(name + "/", b"")
            else:
                bundle.write(path, name)
    return archive


def assert_same_dataset(actual, expected) -> None:
    assert actual.classes == expected.classes
    assert np.array_equal(actual.train.images, expected.train.images)
    assert np.array_equal(actual.train.labels, expected.train.labels)
    assert (actual.test is None) == (expected.test is None)
    if expected.test is not None:
        assert np.array_equal(actual.test.images, expected.test.images)
        assert np.array_equal(actual.test.labels, expected.test.labels)


# Image folders ----------------------------------------------------------------------------------


def test_folder_reads_train_and_test(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")

    dataset = load_dataset(root)

    assert dataset.name == "tree"
    assert dataset.classes == list(CLASSES)
    assert dataset.train.images.shape == (9, 8, 8, 3)
    assert dataset.train.images.dtype == np.uint8
    assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Images are in file-name order within a class: the dog images are values 10, 11, 12.
    assert dataset.train.images[3:6, 1, 1, 0].tolist() == [10, 11, 12]
    assert dataset.test is not None
    assert dataset.test.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_folder_of_class_folders_is_training_split(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree", test=False)

    dataset = load_dataset(tmp_path / "tree" / "train")

    assert dataset.classes == list(CLASSES)
    assert len(dataset.train) == 9
    assert dataset.test is None


def test_folder_converts_grayscale_jpeg_to_rgb(tmp_path: Path) -> None:
    for class_name in CLASSES:
        path = tmp_path / "tree" / "train" / class_name / "a.jpg"
        path.parent.mkdir(parents=True)
        Image.fromarray(np.full((6, 6), 90, dtype=np.uint8), mode="L").save(path, format="JPEG")

    dataset = load_dataset(tmp_path / "tree")

    assert dataset.train.images.shape == (3, 6, 6, 3)


def test_folder_truncated_image_names_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    broken = root / "train" / "dog" / "0001.png"
    broken.write_bytes(broken.read_bytes()[:40])

    with pytest.raises(DataError, match=r"dog/0001\.png"):
        load_dataset(root)


def test_folder_unreadable_image_names_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    (root / "train" / "cat" / "0009.jpg").write_bytes(b"not an image at all")

    with pytest.raises(DataError, match=r"cannot read image .*cat/0009\.jpg"):
        load_dataset(root)


def test_folder_empty_class_names_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    (root / "train" / "zebra").mkdir()

    with pytest.raises(DataError, match=r"train/zebra contains no \.jpg"):
        load_dataset(root)


def test_folder_missing_test_class_names_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    for path in (root / "test" / "frog").iterdir():
        path.unlink()
    (root / "test" / "frog").rmdir()

    with pytest.raises(DataError, match=r"test/frog is missing"):
        load_dataset(root)


def test_folder_mixed_sizes_name_both_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", test=False)
    write_image(root / "train" / "frog" / "0002.png", 5, size=(9, 8))

    with pytest.raises(DataError, match=r"frog/0002\.png is 9x8 but .*cat/0000\.png is 8x8"):
        load_dataset(root)


def test_folder_without_classes_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(DataError, match="no class folders found"):
        load_dataset(tmp_path / "empty")


def test_missing_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset not found: .*nowhere"):
        load_dataset(tmp_path / "nowhere")


def test_unsupported_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "images.rar"
    path.write_bytes(b"Rar!")

    with pytest.raises(DataError, match=r"unsupported dataset file .*images\.rar"):
        load_dataset(path)


# Archives ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "arcname", "mode"),
    [
        ("data.tar.gz", ".", "w:gz"),
        ("data.tgz", "cifar-like", "w:gz"),
        ("data.tar", ".", "w"),
    ],
)
def test_tar_archive_matches_folder(tmp_path: Path, file_name: str, arcname: str, mode: str) -> None:
    root = make_tree(tmp_path / "tree")
    archive = tar_tree(root, tmp_path / file_name, arcname=arcname, mode=mode)

    dataset = load_dataset(archive)

    assert_same_dataset(dataset, load_dataset(root))
    assert dataset.name == "data"


def test_tar_archive_is_not_extracted(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    (tmp_path / "archives").mkdir()
    archive = tar_tree(root, tmp_path / "archives" / "data.tar.gz")

    load_dataset(archive)

    assert sorted(path.name for path in archive.parent.iterdir()) == ["data.tar.gz"]


def test_zip_archive_matches_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    archive = zip_tree(root, tmp_path / "data.zip", prefix="dataset/")

    assert_same_dataset(load_dataset(archive), load_dataset(root))


def test_zip_without_folder_entries_matches_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(root.rglob("*.png")):
            bundle.write(path, path.relative_to(root).as_posix())
        bundle.writestr("__MACOSX/train/cat/._0000.png", b"resource fork")

    assert_same_dataset(load_dataset(archive), load_dataset(root))


def test_archive_of_class_folders_is_training_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", test=False)
    archive = tar_tree(root / "train", tmp_path / "classes.tar.gz", arcname="images")

    dataset = load_dataset(archive)

    assert dataset.classes == list(CLASSES)
    assert len(dataset.train) == 9
    assert dataset.test is None


def test_archive_truncated_image_names_member(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    broken = root / "test" / "dog" / "0001.png"
    broken.write_bytes(broken.read_bytes()[:40])
    archive = tar_tree(root, tmp_path / "data.tar.gz")

    with pytest.raises(DataError, match=r"data\.tar\.gz:test/dog/0001\.png"):
        load_dataset(archive)


def test_archive_empty_class_names_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    (root / "train" / "zebra").mkdir()
    archive = tar_tree(root, tmp_path / "data.tgz")

    with pytest.raises(DataError, match=r"data\.tgz:train/zebra is missing or contains no"):
        load_dataset(archive)


def test_archive_truncated_file_names_archive(tmp_path: Path) -> None:
    archive = tar_tree(make_tree(tmp_path / "tree"), tmp_path / "data.tar.gz")
    archive.write_bytes(archive.read_bytes()[:-200])

    with pytest.raises(DataError, match=r"cannot read archive .*data\.tar\.gz"):
        load_dataset(archive)


def test_zip_damaged_member_names_member(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(root / "train" / "cat" / "0000.png", "train/cat/0000.png")
    data = bytearray(archive.read_bytes())
    # Flip a byte inside the compressed member data (after its 30-byte local header and name).
    data[30 + len("train/cat/0000.png") + 5] ^= 0xFF
    archive.write_bytes(bytes(data))

    with pytest.raises(DataError, match=r"data\.zip"):
        load_dataset(archive)


def test_archive_without_images_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("README.txt", "no images here")

    with pytest.raises(DataError, match=r"notes\.zip contains no \.jpg"):
        load_dataset(archive)


def test_archive_with_two_trees_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "two.zip"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(buffer, format="PNG")
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("a/train/cat/0.png", buffer.getvalue())
        bundle.writestr("b/train/cat/0.png", buffer.getvalue())

    with pytest.raises(DataError, match="several train/ folders"):
        load_dataset(archive)


# CIFAR-10 batches -------------------------------------------------------------------------------


def write_cifar_batches(folder: Path, per_batch: int = 4, *, skip: tuple[str, ...] = ()) -> np.ndarray:
    """Write CIFAR-10 python batches of random images; return all training images as (N, 32, 32, 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        batch_images = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        if name.startswith("data_batch"):
            images.append(batch_images)
        if name in skip:
            continue
        # CIFAR-10 stores each image as 1024 red, then 1024 green, then 1024 blue values.
        rows = batch_images.transpose(0, 3, 1, 2).reshape(per_batch, -1)
        record = {b"data": rows, b"labels": [int(value) for value in rng.integers(0, 10, per_batch)]}
        (folder / name).write_bytes(pickle.dumps(record))
    names = [f"class{index}".encode() for index in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return np.concatenate(images)


def test_cifar_batches_read_in_channel_order(tmp_path: Path) -> None:
    expected = write_cifar_batches(tmp_path / "cifar-10-batches-py")

    dataset = load_dataset(tmp_path)

    assert np.array_equal(dataset.train.images, expected)
    assert dataset.classes[3] == "class3"
    assert dataset.test is not None
    assert len(dataset.test) == 4


def test_cifar_missing_batch_names_file(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "batches", skip=("data_batch_3",))

    with pytest.raises(DataError, match=r"data_batch_3 is missing"):
        load_dataset(tmp_path / "batches")


def test_cifar_corrupt_batch_names_file(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "batches")
    (tmp_path / "batches" / "data_batch_2").write_bytes(b"\x80\x04garbage")

    with pytest.raises(DataError, match=r"cannot read CIFAR-10 batch .*data_batch_2"):
        load_dataset(tmp_path / "batches")


# .npz files -------------------------------------------------------------------------------------


def test_npz_reads_train_and_test(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(6, 5, 5, 3), dtype=np.uint8)
    path = tmp_path / "arrays.npz"
    np.savez(path, x=images, y=np.array([0, 1, 2, 0, 1, 2]), x_test=images[:2], y_test=np.array([3, 0]))

    dataset = load_dataset(path)

    assert np.array_equal(dataset.train.images, images)
    assert dataset.classes == ["0", "1", "2", "3"]
    assert dataset.test is not None
    assert dataset.test.labels.tolist() == [3, 0]


def test_npz_mismatched_lengths_name_file(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.zeros((4, 5, 5, 3), dtype=np.uint8), y=np.zeros(3, dtype=np.int64))

    with pytest.raises(DataError, match=r"arrays\.npz .*4 images but 3 labels"):
        load_dataset(path)


def test_npz_missing_array_names_key(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, images=np.zeros((4, 5, 5, 3), dtype=np.uint8))

    with pytest.raises(DataError, match=r"has no 'x' array \(found: images\)"):
        load_dataset(path)


def test_npz_float_images_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.zeros((4, 5, 5, 3), dtype=np.float32), y=np.zeros(4, dtype=np.int64))

    with pytest.raises(DataError, match="images must be uint8, got float32"):
        load_dataset(path)


def test_npz_test_arrays_need_each_other(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.zeros((4, 5, 5, 3), dtype=np.uint8), y=np.zeros(4, dtype=np.int64), x_test=np.zeros((1, 5, 5, 3), dtype=np.uint8))

    with pytest.raises(DataError, match="needs both 'x_test' and 'y_test'"):
        load_dataset(path)


def test_npz_truncated_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, x=np.zeros((4, 5, 5, 3), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(DataError, match=r"cannot read .*arrays\.npz"):
        load_dataset(path)
