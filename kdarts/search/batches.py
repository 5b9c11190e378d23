"""Mini-batches from an in-memory uint8 dataset, with the standard CIFAR augmentation.

Augmentation runs on whole batches as tensor operations (no per-image Python loop): a random crop
after 4-pixel zero padding and a random horizontal flip, then per-channel normalisation. All
randomness comes from the `torch.Generator` passed in, so a search can restore it exactly.
"""

from __future__ import annotations

import numpy as np
import torch

PADDING = 4


class ImageBatches:
    """Images and labels held as tensors on the search device, sliced into normalised batches."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        device: torch.device,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        # NHWC uint8 to NCHW uint8 once; batches are converted to float only when they are drawn.
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
        self.labels = torch.from_numpy(labels).to(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.memory_format = memory_format

    def batch(
        self, indices: np.ndarray, *, augment: bool, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(indices).to(self.images.device)
        images = self.images.index_select(0, index).float().div_(255.0)
        if augment:
            if generator is None:
                raise ValueError("augmentation needs a generator")
            images = random_crop_and_flip(images, generator)
        images = ((images - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        return images, self.labels.index_select(0, index)


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-channel mean and standard deviation of uint8 images, scaled to [0, 1]."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(axis=0).astype(np.float32), pixels.std(axis=0).astype(np.float32)


def random_crop_and_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Crop each `(C, H, W)` image at a random offset of the zero-padded image and flip half of them.

    Offsets are uniform in 0..8 on each axis, so a crop keeps the image size and shifts the
    content by up to 4 pixels. Each image is flipped left to right with probability 1/2.
    """
    count, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (PADDING, PADDING, PADDING, PADDING))

    # The generator lives on the CPU so that its state is the same object on every device.
    offsets_y = torch.randint(0, 2 * PADDING + 1, (count,), generator=generator).to(images.device)
    offsets_x = torch.randint(0, 2 * PADDING + 1, (count,), generator=generator).to(images.device)
    flips = (torch.rand(count, generator=generator) < 0.5).to(images.device)

    rows = offsets_y[:, None] + torch.arange(height, device=images.device)[None, :]
    columns = offsets_x[:, None] + torch.arange(width, device=images.device)[None, :]
    # A flipped image reads its columns right to left.
    columns = torch.where(flips[:, None], columns.flip(1), columns)

    batch_index = torch.arange(count, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], columns[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()
