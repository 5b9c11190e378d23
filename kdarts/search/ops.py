"""Candidate operations (primitives) of the DARTS CNN search space.

Every operation maps `(N, C, H, W)` to `(N, C, H / stride, W / stride)`. Batch norms in the search
network have no affine parameters, as in DARTS: a learnable scale would let an operation's weight
and its architecture parameter trade magnitude, which blurs the comparison between operations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ReLUConvBN(nn.Module):
    """ReLU, convolution and batch norm: the cells' input preprocessing."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, affine: bool):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilatedConv(nn.Module):
    """ReLU, dilated depthwise convolution, pointwise convolution and batch norm."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, dilation: int, affine: bool):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel_size, stride, padding, dilation=dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SeparableConv(nn.Module):
    """Two stacked depthwise-separable convolutions; only the first one applies the stride."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, affine: bool):
        super().__init__()
        self.op = nn.Sequential(
            DilatedConv(channels, kernel_size, stride, padding, dilation=1, affine=affine),
            DilatedConv(channels, kernel_size, 1, padding, dilation=1, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The `none` operation: zeros of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return torch.zeros_like(x)
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two 1x1 stride-2 convolutions, the second shifted by one pixel.

    A single strided 1x1 convolution would only ever see even pixels; the shifted half covers the
    odd ones. Cells use it as the identity on stride-2 edges and to match a reduced previous output.
    """

    def __init__(self, in_channels: int, out_channels: int, affine: bool):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {out_channels}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def _pool_with_bn(pool: nn.Module, channels: int) -> nn.Module:
    # Pooling outputs are not normalised like the convolution outputs, so DARTS adds an affine-free
    # batch norm after them in the search network to put all candidates on one scale.
    return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False))


OperationFactory = Callable[[int, int, bool], nn.Module]

OPERATIONS: dict[str, OperationFactory] = {
    "none": lambda channels, stride, affine: Zero(stride),
    "max_pool_3x3": lambda channels, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda channels, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda channels, stride, affine: (
        nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)
    ),
    "sep_conv_3x3": lambda channels, stride, affine: SeparableConv(channels, 3, stride, 1, affine),
    "sep_conv_5x5": lambda channels, stride, affine: SeparableConv(channels, 5, stride, 2, affine),
    "dil_conv_3x3": lambda channels, stride, affine: DilatedConv(channels, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda channels, stride, affine: DilatedConv(channels, 5, stride, 4, 2, affine),
}


def build_operation(name: str, channels: int, stride: int, *, affine: bool = False, search: bool = True) -> nn.Module:
    """Build the primitive `name`; in the search network, pooling gets a batch norm after it."""
    if name not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; known operations: {', '.join(OPERATIONS)}")
    operation = OPERATIONS[name](channels, stride, affine)
    if search and name in ("max_pool_3x3", "avg_pool_3x3"):
        operation = _pool_with_bn(operation, channels)
    return operation
