"""Candidate operations (primitives) of the DARTS CNN search space.

Every operation maps `(N, C, H, W)` to `(N, C, H / stride, W / stride)`. Batch norms in the search
network have no affine parameters, as in DARTS: a learnable scale would let an operation's weight
and its architecture parameter trade magnitude, which blurs the comparison between operations.

The convolutions and the stride-2 skip connection start with a ReLU of their input. Built with
`relu_first=False` they leave it out and expect the caller to pass `relu(x)`: a search cell
computes that ReLU once per cell state and shares it between all the edges that read the state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

POOLING_PRIMITIVES = ("max_pool_3x3", "avg_pool_3x3")
CONVOLUTION_PRIMITIVES = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


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

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool,
        *,
        relu_first: bool = True,
    ):
        super().__init__()
        self.relu_first = relu_first
        self.depthwise = nn.Conv2d(
            channels, channels, kernel_size, stride, padding, dilation=dilation, groups=channels, bias=False
        )
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu_first:
            x = torch.relu(x)
        return self.bn(self.pointwise(self.depthwise(x)))


class SeparableConv(nn.Module):
    """Two stacked depthwise-separable convolutions; only the first one applies the stride."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, affine: bool, *, relu_first: bool = True):
        super().__init__()
        self.first = DilatedConv(channels, kernel_size, stride, padding, 1, affine, relu_first=relu_first)
        self.second = DilatedConv(channels, kernel_size, 1, padding, 1, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


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

    def __init__(self, in_channels: int, out_channels: int, affine: bool, *, relu_first: bool = True):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {out_channels}")
        self.relu_first = relu_first
        self.conv_even = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu_first:
            x = torch.relu(x)
        # The odd half reads pixels (1, 1), (1, 3), ...: the even grid of x shifted by one pixel.
        # The padded row and column past the edge are never read by the stride-2 convolution
        # when H and W are even, so slicing alone is enough.
        shifted = x[:, :, 1:, 1:]
        if x.shape[2] % 2 or x.shape[3] % 2:
            shifted = nn.functional.pad(shifted, (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def _pool_with_bn(pool: nn.Module, channels: int) -> nn.Module:
    # Pooling outputs are not normalised like the convolution outputs, so DARTS adds an affine-free
    # batch norm after them in the search network to put all candidates on one scale.
    return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False))


# (channels, stride, affine, relu_first) -> module
OperationFactory = Callable[[int, int, bool, bool], nn.Module]

OPERATIONS: dict[str, OperationFactory] = {
    "none": lambda channels, stride, affine, relu_first: Zero(stride),
    "max_pool_3x3": lambda channels, stride, affine, relu_first: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda channels, stride, affine, relu_first: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "skip_connect": lambda channels, stride, affine, relu_first: (
        nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine, relu_first=relu_first)
    ),
    "sep_conv_3x3": lambda channels, stride, affine, relu_first: SeparableConv(
        channels, 3, stride, 1, affine, relu_first=relu_first
    ),
    "sep_conv_5x5": lambda channels, stride, affine, relu_first: SeparableConv(
        channels, 5, stride, 2, affine, relu_first=relu_first
    ),
    "dil_conv_3x3": lambda channels, stride, affine, relu_first: DilatedConv(
        channels, 3, stride, 2, 2, affine, relu_first=relu_first
    ),
    "dil_conv_5x5": lambda channels, stride, affine, relu_first: DilatedConv(
        channels, 5, stride, 4, 2, affine, relu_first=relu_first
    ),
}


def starts_with_relu(name: str, stride: int) -> bool:
    """Return whether primitive `name` at `stride` begins with a ReLU of its input."""
    return name in CONVOLUTION_PRIMITIVES or (name == "skip_connect" and stride != 1)


def build_operation(
    name: str, channels: int, stride: int, *, affine: bool = False, search: bool = True, relu_first: bool = True
) -> nn.Module:
    """Build the primitive `name`; in the search network, pooling gets a batch norm after it.

    With `relu_first=False`, a primitive that starts with a ReLU (see `starts_with_relu`) is
    built without it, and its caller must pass the ReLU of the input.
    """
    if name not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; known operations: {', '.join(OPERATIONS)}")
    operation = OPERATIONS[name](channels, stride, affine, relu_first)
    if search and name in POOLING_PRIMITIVES:
        operation = _pool_with_bn(operation, channels)
    return operation
