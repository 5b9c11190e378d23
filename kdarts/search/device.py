"""Device selection for a search, and the speed settings that suit each device.

The settings are chosen per device kind and can be overridden (`--channels-last`, `--precision`):

- channels-last memory format on the CPU, and on CUDA together with bfloat16 autocast. On the
  CPU, oneDNN's depthwise convolutions run much faster on NHWC tensors. One forward and backward
  pass of the DARTS CIFAR-10 supernet (8 cells, 16 channels, batch 64) took 4.0-4.6 s instead
  of 9.7-11.6 s on a 2-core AMD EPYC with torch 2.13 (docs/benchmarks.md). On CUDA, torch runs
  NCHW fp32 depthwise convolutions with its own kernel and sends channels-last ones to cuDNN
  (`use_cudnn_depthwise` in ATen's Convolution.cpp). So fp32 stays NCHW, the layout of that
  kernel, and reduced precision uses cuDNN's NHWC tensor-core kernels.
- bfloat16 autocast only on CUDA GPUs of compute capability 8.0 or later, and never on the CPU.
  On the same CPU it made a first-order step of that supernet slower (6.8 s against 5.1 s), and
  its channels-last 5x5 dilated depthwise convolutions gave NaN weight gradients in 9 of 20
  trials. Older GPUs have no fast bfloat16 arithmetic.
- cuDNN autotuning and TF32 matrix multiplies on CUDA.

NOTE: the CUDA choices follow PyTorch's performance guidance and have not been measured on a GPU
in this project; `--channels-last` and `--precision` override them.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from kdarts.errors import SearchError

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]
Switch = Literal["auto", "on", "off"]


def resolve_device(name: str) -> torch.device:
    """Map `auto`, `cpu` or `cuda` to a torch device, failing clearly when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SearchError("--device cuda was requested but torch finds no CUDA GPU; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise SearchError(f"invalid device {name!r}; use cpu, cuda or auto")
    return torch.device(name)


@dataclass(frozen=True)
class DeviceSettings:
    """The device of a search and how tensors and arithmetic are laid out on it."""

    device: torch.device
    channels_last: bool
    autocast_dtype: torch.dtype | None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, enabled: bool = True) -> AbstractContextManager[object]:
        """Return the autocast context of these settings, or a no-op one when autocast is off."""
        if self.autocast_dtype is None or not enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> str:
        precision = "fp32" if self.autocast_dtype is None else f"{self.autocast_dtype} autocast"
        layout = "channels-last" if self.channels_last else "NCHW"
        return f"{self.device}, {layout}, {precision}"


def _supports_fast_bfloat16(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def device_settings(device: torch.device, *, channels_last: Switch = "auto", precision: Precision = "auto") -> DeviceSettings:
    """Choose the memory format and autocast type for `device`, honouring explicit choices."""
    if precision == "bf16" and device.type == "cpu":
        raise SearchError(
            "--precision bf16 is not supported on the CPU: with torch 2.13 it gave NaN weight gradients "
            "for channels-last 5x5 dilated depthwise convolutions, and a step was slower than in fp32; "
            "use --precision fp32 or auto"
        )
    if precision == "bf16" and device.type == "cuda" and not _supports_fast_bfloat16(device):
        raise SearchError(
            f"--precision bf16 needs a CUDA GPU of compute capability 8.0 or later, but {device} has "
            f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}; use --precision fp32 or auto"
        )

    if precision == "auto":
        autocast_dtype = torch.bfloat16 if _supports_fast_bfloat16(device) else None
    else:
        autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    if channels_last == "auto":
        use_channels_last = device.type == "cpu" or autocast_dtype is not None
    else:
        use_channels_last = channels_last == "on"
    return DeviceSettings(device=device, channels_last=use_channels_last, autocast_dtype=autocast_dtype)


def configure_backends(device: torch.device) -> None:
    """Turn on the torch backend settings that speed up a search on `device`."""
    if device.type == "cuda":
        # NOTE: autotuned cuDNN kernels and atomic adds make CUDA runs differ in the last bits
        # from run to run, so a resumed search on a GPU matches an uninterrupted one closely but
        # not bit for bit. Bit-identical resume is tested on the CPU.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
