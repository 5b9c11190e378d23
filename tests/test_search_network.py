"""The supernet: cell layout, primitives, and the shared-ReLU and in-place sums against plain definitions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdarts.plan import DARTS_PRIMITIVES
from kdarts.search.network import ArchitectureParameters, MixedOperation, NetworkConfig, SearchNetwork, edge_count
from kdarts.search.ops import FactorizedReduce, ReLUConvBN, build_operation, starts_with_relu


def make_network(layers: int = 8, primitives: tuple[str, ...] = DARTS_PRIMITIVES, nodes: int = 4) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(NetworkConfig(primitives=primitives, classes=10, init_channels=8, layers=layers, nodes=nodes))


def test_reduction_cells_at_thirds() -> None:
    network = make_network(layers=8)

    reductions = [index for index, cell in enumerate(network.cells) if cell.reduction]

    assert reductions == [2, 5]


def test_factorized_reduce_after_reduction() -> None:
    network = make_network(layers=8)

    factorized = [index for index, cell in enumerate(network.cells) if isinstance(cell.preprocess0, FactorizedReduce)]

    assert factorized == [3, 6]
    assert all(isinstance(network.cells[index].preprocess1, ReLUConvBN) for index in range(8))


def test_channels_double_at_reductions() -> None:
    network = make_network(layers=8)

    channels = [cell.preprocess1.op[1].out_channels for cell in network.cells]

    assert channels == [8, 8, 16, 16, 16, 32, 32, 32]
    assert network.classifier.in_features == 4 * 32


def test_cell_has_edge_per_input_of_each_node() -> None:
    network = make_network(nodes=3)

    assert len(network.cells[0].edges) == edge_count(3) == 2 + 3 + 4


def test_forward_gives_class_logits() -> None:
    network = make_network(layers=5)
    alphas = ArchitectureParameters(DARTS_PRIMITIVES, 4)

    logits = network(torch.randn(2, 3, 32, 32), alphas.normal, alphas.reduce)

    assert logits.shape == (2, 10)


def test_edge_builds_only_chosen_primitives() -> None:
    edge = MixedOperation(("none", "max_pool_3x3", "sep_conv_5x5"), channels=4, stride=1)

    assert edge.active_indices == [1, 2]
    assert len(edge.operations) == 2


def test_none_alpha_gets_gradient() -> None:
    # `none` is never computed, but its logit changes the softmax weights of the others.
    network = make_network(layers=3, nodes=2)
    alphas = ArchitectureParameters(DARTS_PRIMITIVES, 2)
    labels = torch.tensor([1, 2])

    loss = nn.functional.cross_entropy(network(torch.randn(2, 3, 16, 16), alphas.normal, alphas.reduce), labels)
    (gradient,) = torch.autograd.grad(loss, [alphas.normal])

    assert gradient[:, DARTS_PRIMITIVES.index("none")].abs().sum() > 0


@pytest.mark.parametrize("stride", [1, 2])
def test_edge_matches_plain_weighted_sum(stride: int) -> None:
    """The edge, with its shared ReLU and in-place sum, equals sum_k w_k * op_k(x) with each op's own ReLU."""
    torch.manual_seed(1)
    edge = MixedOperation(DARTS_PRIMITIVES, channels=4, stride=stride).double()
    plain_operations = []
    for index, operation in zip(edge.active_indices, edge.operations):
        plain = build_operation(DARTS_PRIMITIVES[index], 4, stride).double()
        plain.load_state_dict(operation.state_dict())
        plain_operations.append(plain)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(len(DARTS_PRIMITIVES), dtype=torch.float64, requires_grad=True)
    weights = torch.softmax(logits, dim=-1)

    output = edge(x, torch.relu(x), weights)
    expected = sum(weights[index] * plain(x) for index, plain in zip(edge.active_indices, plain_operations))

    assert torch.allclose(output, expected, rtol=0, atol=1e-12)
    gradients = torch.autograd.grad(output.square().sum(), [x, logits], retain_graph=True)
    expected_gradients = torch.autograd.grad(expected.square().sum(), [x, logits])
    for gradient, expected_gradient in zip(gradients, expected_gradients):
        assert torch.allclose(gradient, expected_gradient, rtol=0, atol=1e-10)


def test_edge_adds_into_accumulator() -> None:
    edge = MixedOperation(("skip_connect", "avg_pool_3x3"), channels=2, stride=1)
    x = torch.randn(2, 2, 4, 4)
    weights = torch.tensor([0.25, 0.75])
    base = torch.randn(2, 2, 4, 4)

    output = edge(x, None, weights, base.clone())

    assert torch.allclose(output, base + edge(x, None, weights))


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_reads_shifted_grid(size: int) -> None:
    reduce = FactorizedReduce(4, 6, affine=False).double()
    x = torch.randn(2, 4, size, size, dtype=torch.float64)

    output = reduce(x)

    # The second half of the channels reads the pixels one step down and right, zero past the edge.
    shifted = nn.functional.pad(torch.relu(x)[:, :, 1:, 1:], (0, 1, 0, 1))
    expected = reduce.bn(torch.cat([reduce.conv_even(torch.relu(x)), reduce.conv_odd(shifted)], dim=1))
    assert output.shape == (2, 6, (size + 1) // 2, (size + 1) // 2)
    assert torch.allclose(output, expected, rtol=0, atol=1e-12)


def test_relu_first_primitives() -> None:
    starting = [name for name in DARTS_PRIMITIVES if starts_with_relu(name, 1)]

    assert starting == ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    assert starts_with_relu("skip_connect", 2)
    assert not starts_with_relu("max_pool_3x3", 2)


def test_channels_last_matches_nchw() -> None:
    network = make_network(layers=3, nodes=2)
    alphas = ArchitectureParameters(DARTS_PRIMITIVES, 2)
    images = torch.randn(4, 3, 16, 16)
    expected = network(images, alphas.normal, alphas.reduce)

    network = network.to(memory_format=torch.channels_last)
    output = network(images.contiguous(memory_format=torch.channels_last), alphas.normal, alphas.reduce)

    assert torch.allclose(output, expected, atol=1e-4)
