"""The DARTS supernet: cells of mixed operations weighted by the architecture parameters.

A cell has two inputs (the outputs of the two previous cells, c_{k-2} and c_{k-1}) and K
intermediate nodes. Node i is the sum of one mixed operation per earlier node and input, so a cell
has K(K+3)/2 edges, listed node by node (node 2's inputs 0, 1, then node 3's inputs 0, 1, 2, ...).
The cell's output concatenates its intermediate nodes along the channels. Reduction cells, at 1/3
and 2/3 of the depth, apply stride 2 on the edges from the cell inputs and double the channels.

The architecture parameters (alphas) are not parameters of this module: the forward pass takes them
as arguments, so the weight optimizer can never see them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdarts.search.ops import FactorizedReduce, ReLUConvBN, build_operation, starts_with_relu


def edge_count(nodes: int) -> int:
    """Return the number of edges of a cell with `nodes` intermediate nodes."""
    return nodes * (nodes + 3) // 2


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the search network."""

    primitives: tuple[str, ...]
    classes: int = 10
    init_channels: int = 16
    layers: int = 8
    nodes: int = 4
    stem_multiplier: int = 3
    in_channels: int = 3


class MixedOperation(nn.Module):
    """One edge: the softmax-weighted sum of every candidate operation.

    The primitives that start with a ReLU are built without it and read `activated`, the ReLU
    of the input, which the cell computes once for all edges that read the same state.
    """

    def __init__(self, primitives: tuple[str, ...], channels: int, stride: int):
        super().__init__()
        # `none` outputs zeros, so its term in the weighted sum is zero whatever its weight; it is
        # left out of the computation. Its logit still gets a gradient through the softmax.
        self.active_indices = [index for index, name in enumerate(primitives) if name != "none"]
        self.reads_activated = [starts_with_relu(primitives[index], stride) for index in self.active_indices]
        self.operations = nn.ModuleList(
            build_operation(primitives[index], channels, stride, relu_first=False) for index in self.active_indices
        )

    @property
    def needs_activated(self) -> bool:
        return any(self.reads_activated)

    def forward(
        self,
        x: torch.Tensor,
        activated: torch.Tensor | None,
        weights: torch.Tensor,
        accumulator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the weighted sum of the operations, added in place to `accumulator` if given.

        `accumulator` must be a tensor that no autograd node has saved, such as an earlier
        return value of this method. One in-place multiply-add per operation reads and writes
        less memory than a product and a sum in new tensors.
        """
        total = accumulator
        for index, reads_activated, operation in zip(self.active_indices, self.reads_activated, self.operations):
            output = operation(activated if reads_activated else x)
            if total is None:
                total = output * weights[index]
            else:
                total = total.addcmul_(output, weights[index])
        if total is None:
            raise RuntimeError("a mixed operation needs at least one primitive other than 'none'")
        return total


class SearchCell(nn.Module):
    """A normal or reduction cell of the supernet."""

    def __init__(
        self,
        primitives: tuple[str, ...],
        nodes: int,
        channels_prev_prev: int,
        channels_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes

        # The previous-but-one output has twice the spatial size when the previous cell reduced.
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(channels_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(channels_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(channels_prev, channels, 1, 1, 0, affine=False)

        self.edges = nn.ModuleList()
        # Whether any edge out of state s (inputs 0 and 1, then the nodes) reads relu(state s).
        self.state_needs_activated = [False] * (nodes + 2)
        for node in range(nodes):
            for input_index in range(2 + node):
                stride = 2 if reduction and input_index < 2 else 1
                edge = MixedOperation(primitives, channels, stride)
                self.edges.append(edge)
                self.state_needs_activated[input_index] |= edge.needs_activated

    def forward(self, input0: torch.Tensor, input1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(input0), self.preprocess1(input1)]
        activated = [self._activate(index, state) for index, state in enumerate(states)]
        offset = 0
        for _ in range(self.nodes):
            node = None
            for input_index, state in enumerate(states):
                # Every edge into the node adds its terms to the same tensor.
                node = self.edges[offset + input_index](state, activated[input_index], weights[offset + input_index], node)
            offset += len(states)
            states.append(node)
            activated.append(self._activate(len(states) - 1, node))
        return torch.cat(states[2:], dim=1)

    def _activate(self, index: int, state: torch.Tensor) -> torch.Tensor | None:
        # One ReLU per state serves every edge that reads it.
        return torch.relu(state) if self.state_needs_activated[index] else None


class SearchNetwork(nn.Module):
    """The supernet: a stem, `layers` search cells, global pooling and a linear classifier."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        stem_channels = config.stem_multiplier * config.init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        )

        channels_prev_prev, channels_prev, channels = stem_channels, stem_channels, config.init_channels
        reduction_layers = {config.layers // 3, 2 * config.layers // 3}
        self.cells = nn.ModuleList()
        reduction_prev = False
        for layer in range(config.layers):
            reduction = layer in reduction_layers
            if reduction:
                channels *= 2
            cell = SearchCell(
                config.primitives, config.nodes, channels_prev_prev, channels_prev, channels, reduction, reduction_prev
            )
            self.cells.append(cell)
            reduction_prev = reduction
            channels_prev_prev, channels_prev = channels_prev, config.nodes * channels

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels_prev, config.classes)

    def forward(self, x: torch.Tensor, alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor) -> torch.Tensor:
        weights_normal = torch.softmax(alpha_normal, dim=-1)
        weights_reduce = torch.softmax(alpha_reduce, dim=-1)
        state0 = state1 = self.stem(x)
        for cell in self.cells:
            weights = weights_reduce if cell.reduction else weights_normal
            state0, state1 = state1, cell(state0, state1, weights)
        return self.classifier(self.pool(state1).flatten(1))


class ArchitectureParameters(nn.Module):
    """The alphas: one logit per primitive on every edge of the normal and the reduction cell."""

    def __init__(self, primitives: tuple[str, ...], nodes: int, generator: torch.Generator | None = None):
        super().__init__()
        shape = (edge_count(nodes), len(primitives))
        # DARTS starts from small random logits, so the first softmax is close to uniform.
        self.normal = nn.Parameter(1e-3 * torch.randn(shape, generator=generator))
        self.reduce = nn.Parameter(1e-3 * torch.randn(shape, generator=generator))
