"""Batches and augmentation: random crop after 4-pixel padding, horizontal flip, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdarts.search.batches import PADDING, ImageBatches, channel_statistics, random_crop_and_flip


def crop_candidates(image: torch.Tensor) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Return every crop of the zero-padded image, keyed by (offset y, offset x, flipped)."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (PADDING, PADDING, PADDING, PADDING))
    candidates = {}
    for offset_y in range(2 * PADDING + 1):
        for offset_x in range(2 * PADDING + 1):
            crop = padded[:, offset_y : offset_y + height, offset_x : offset_x + width]
            candidates[(offset_y, offset_x, False)] = crop
            candidates[(offset_y, offset_x, True)] = crop.flip(-1)
    return candidates


def find_crop(image: torch.Tensor, augmented: torch.Tensor) -> list[tuple[int, int, bool]]:
    return [key for key, crop in crop_candidates(image).items() if torch.equal(crop, augmented)]


def test_augmentation_is_padded_crop_or_flip() -> None:
    # Distinct pixel values make every crop position distinguishable.
    images = torch.rand(64, 3, 10, 12, generator=torch.Generator().manual_seed(0)) + 0.1

    augmented = random_crop_and_flip(images, torch.Generator().manual_seed(1))

    assert augmented.shape == images.shape
    for index in range(len(images)):
        assert len(find_crop(images[index], augmented[index])) == 1, f"image {index} is no padded crop"


def test_augmentation_covers_offsets_and_flips() -> None:
    images = torch.rand(400, 1, 6, 6, generator=torch.Generator().manual_seed(0)) + 0.1

    augmented = random_crop_and_flip(images, torch.Generator().manual_seed(2))

    found = [find_crop(images[index], augmented[index])[0] for index in range(len(images))]
    offsets_y = {key[0] for key in found}
    offsets_x = {key[1] for key in found}
    flipped = sum(key[2] for key in found)
    assert offsets_y == set(range(2 * PADDING + 1))
    assert offsets_x == set(range(2 * PADDING + 1))
    # 400 fair coin flips land within 150..250 heads with probability 1 - 6e-7.
    assert 150 <= flipped <= 250


def test_augmentation_repeats_with_generator_state() -> None:
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()

    first = random_crop_and_flip(images, generator)
    generator.set_state(state)
    second = random_crop_and_flip(images, generator)

    assert torch.equal(first, second)


def test_channel_statistics_match_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(20, 4, 4, 3), dtype=np.uint8)

    mean, std = channel_statistics(images)

    expected = images.astype(np.float64) / 255.0
    assert np.allclose(mean, expected.mean(axis=(0, 1, 2)), atol=1e-6)
    assert np.allclose(std, expected.std(axis=(0, 1, 2)), atol=1e-6)


def test_batch_normalises_each_channel() -> None:
    rng = np.random.default_rng(0)
    # Channels with different brightness and contrast, as in real photographs.
    images = np.stack(
        [rng.normal(60, 10, (50, 8, 8)), rng.normal(128, 40, (50, 8, 8)), rng.normal(200, 20, (50, 8, 8))], axis=-1
    ).clip(0, 255).astype(np.uint8)
    mean, std = channel_statistics(images)
    batches = ImageBatches(images, np.zeros(50, dtype=np.int64), torch.device("cpu"), mean, std)

    normalised, _ = batches.batch(np.arange(50), augment=False)

    assert torch.allclose(normalised.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalised.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_batch_selects_images_and_labels() -> None:
    images = np.arange(5, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)
    labels = np.array([10, 11, 12, 13, 14])
    zero, one = np.zeros(3, dtype=np.float32), np.ones(3, dtype=np.float32)
    batches = ImageBatches(images, labels, torch.device("cpu"), zero, one)

    batch_images, batch_labels = batches.batch(np.array([3, 1]), augment=False)

    assert batch_labels.tolist() == [13, 11]
    assert torch.allclose(batch_images[:, 0, 0, 0], torch.tensor([3 / 255, 1 / 255]))


def test_batch_uses_requested_memory_format() -> None:
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    batches = ImageBatches(
        images,
        np.zeros(4, dtype=np.int64),
        torch.device("cpu"),
        np.zeros(3, dtype=np.float32),
        np.ones(3, dtype=np.float32),
        memory_format=torch.channels_last,
    )

    batch_images, _ = batches.batch(np.arange(4), augment=True, generator=torch.Generator().manual_seed(0))

    assert batch_images.is_contiguous(memory_format=torch.channels_last)


def test_batch_augmentation_needs_generator() -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    batches = ImageBatches(images, np.zeros(2, dtype=np.int64), torch.device("cpu"), np.zeros(3), np.ones(3))

    with pytest.raises(ValueError, match="generator"):
        batches.batch(np.arange(2), augment=True)
