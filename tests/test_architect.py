"""The bilevel step: second-order gradient against an exact reference, and the optimizers' parameters."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from kdarts.plan import DARTS_PRIMITIVES
from kdarts.search.architect import Architect, _unrolled_weights, second_order_alpha_gradient
from kdarts.search.config import SearchConfig
from kdarts.search.device import device_settings
from kdarts.search.network import ArchitectureParameters, NetworkConfig, SearchNetwork
from kdarts.search.step import search_step
from kdarts.search.trainer import Search, SearchOptions

XI = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 3e-4


@pytest.fixture
def tiny() -> tuple[SearchNetwork, ArchitectureParameters, torch.optim.SGD]:
    """A float64 supernet with both cell types, random alphas and filled momentum buffers."""
    torch.manual_seed(0)
    config = NetworkConfig(primitives=DARTS_PRIMITIVES, classes=3, init_channels=4, layers=3, nodes=2)
    network = SearchNetwork(config).double()
    alphas = ArchitectureParameters(config.primitives, config.nodes).double()
    with torch.no_grad():
        alphas.normal.normal_(0.0, 0.5)
        alphas.reduce.normal_(0.0, 0.5)
    optimizer = torch.optim.SGD(network.parameters(), lr=XI, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    # Two real steps, so the unrolled step has a momentum buffer to include.
    for _ in range(2):
        images, labels = random_batch()
        optimizer.zero_grad()
        nn.functional.cross_entropy(network(images, alphas.normal.detach(), alphas.reduce.detach()), labels).backward()
        optimizer.step()
    return network, alphas, optimizer


def random_batch(count: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(count, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (count,))


def exact_unrolled_gradient(
    network: SearchNetwork,
    alphas: ArchitectureParameters,
    optimizer: torch.optim.SGD,
    train_batch: tuple[torch.Tensor, torch.Tensor],
    valid_batch: tuple[torch.Tensor, torch.Tensor],
    *,
    hessian: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiate L_val(w - xi * (momentum * v + grad L_train(w) + wd * w)) exactly, by double backward.

    With `hessian=False` the unrolled weights are treated as constants, which leaves out the
    second-order term.
    """
    names = [name for name, _ in network.named_parameters()]
    parameters = [parameter for _, parameter in network.named_parameters()]
    weights = [parameter.detach().clone().requires_grad_(True) for parameter in parameters]

    def loss_at(values: list[torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        buffers = {name: buffer.clone() for name, buffer in network.named_buffers()}
        logits = functional_call(network, (dict(zip(names, values)), buffers), (batch[0], alphas.normal, alphas.reduce))
        return nn.functional.cross_entropy(logits, batch[1])

    gradients = torch.autograd.grad(loss_at(weights, train_batch), weights, create_graph=hessian)
    unrolled = [
        weight - XI * (MOMENTUM * optimizer.state[parameter]["momentum_buffer"] + gradient + WEIGHT_DECAY * weight)
        for parameter, weight, gradient in zip(parameters, weights, gradients)
    ]
    normal, reduce = torch.autograd.grad(loss_at(unrolled, valid_batch), [alphas.normal, alphas.reduce])
    return normal, reduce


def test_second_order_matches_double_backward(tiny) -> None:
    network, alphas, optimizer = tiny
    train_batch, valid_batch = random_batch(), random_batch()

    # DARTS's perturbation of norm 0.01 flips some ReLUs, so its difference quotient is an
    # approximation. A perturbation of norm 1e-7 flips none here, and float64 keeps its
    # rounding error near 1e-9, so this compares the formula with the exact gradient.
    normal, reduce, _, _ = second_order_alpha_gradient(
        network, alphas, optimizer, train_batch, valid_batch, XI, finite_difference_scale=1e-7
    )
    exact_normal, exact_reduce = exact_unrolled_gradient(network, alphas, optimizer, train_batch, valid_batch)

    error = max((normal - exact_normal).abs().max().item(), (reduce - exact_reduce).abs().max().item())
    scale = max(exact_normal.abs().max().item(), exact_reduce.abs().max().item())
    assert error < 1e-6 * scale, f"finite-difference error {error:.3e} against gradient scale {scale:.3e}"


def test_second_order_term_is_not_negligible(tiny) -> None:
    # Guards the test above: the Hessian term must be far larger than its tolerance, or a
    # first-order gradient at the unrolled weights would pass it too.
    network, alphas, optimizer = tiny
    train_batch, valid_batch = random_batch(), random_batch()

    exact_normal, _ = exact_unrolled_gradient(network, alphas, optimizer, train_batch, valid_batch)
    direct_normal, _ = exact_unrolled_gradient(network, alphas, optimizer, train_batch, valid_batch, hessian=False)

    difference = (exact_normal - direct_normal).abs().max().item()
    assert difference > 1e-3 * exact_normal.abs().max().item()


def test_unrolled_step_matches_sgd_step(tiny) -> None:
    network, alphas, optimizer = tiny
    train_batch = random_batch()
    names = [name for name, _ in network.named_parameters()]

    def loss_at(values, batch):
        buffers = {name: buffer.clone() for name, buffer in network.named_buffers()}
        logits = functional_call(network, (dict(zip(names, values)), buffers), (batch[0], alphas.normal, alphas.reduce))
        return nn.functional.cross_entropy(logits, batch[1]), logits

    unrolled = _unrolled_weights(network, [p.detach() for p in network.parameters()], optimizer, train_batch, XI, loss_at)

    stepped_network = copy.deepcopy(network)
    stepped_optimizer = torch.optim.SGD(stepped_network.parameters(), lr=XI, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    stepped_optimizer.load_state_dict(optimizer.state_dict())
    stepped_optimizer.zero_grad()
    logits = stepped_network(train_batch[0], alphas.normal.detach(), alphas.reduce.detach())
    nn.functional.cross_entropy(logits, train_batch[1]).backward()
    stepped_optimizer.step()
    for name, value, parameter in zip(names, unrolled, stepped_network.parameters()):
        assert torch.allclose(value, parameter, rtol=0, atol=1e-12), f"unrolled {name} differs from the SGD step"


def test_second_order_leaves_network_unchanged(tiny) -> None:
    network, alphas, optimizer = tiny
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}

    second_order_alpha_gradient(network, alphas, optimizer, random_batch(), random_batch(), XI)

    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, before[name]), f"{name} changed"


# Optimizers -------------------------------------------------------------------------------------


@pytest.fixture
def search(tmp_path: Path, sample_dataset) -> Search:
    config = SearchConfig(epochs=2, layers=3, init_channels=4, nodes=2, batch_size=16, max_train_images=64, seed=0)
    return Search(config, SearchOptions(output=tmp_path, device="cpu"), dataset=sample_dataset)


def test_alphas_not_in_weight_optimizer(search: Search) -> None:
    alpha_ids = {id(search.alphas.normal), id(search.alphas.reduce)}
    weight_ids = {id(parameter) for group in search.weight_optimizer.param_groups for parameter in group["params"]}

    assert not alpha_ids & weight_ids
    assert not alpha_ids & {id(parameter) for parameter in search.network.parameters()}
    assert weight_ids == {id(parameter) for parameter in search.network.parameters()}


def test_arch_optimizer_holds_only_alphas(search: Search) -> None:
    arch_ids = [id(parameter) for group in search.architect.optimizer.param_groups for parameter in group["params"]]

    assert sorted(arch_ids) == sorted([id(search.alphas.normal), id(search.alphas.reduce)])


def test_optimizers_use_darts_defaults(search: Search) -> None:
    weights = search.weight_optimizer.param_groups[0]
    arch = search.architect.optimizer.param_groups[0]

    assert isinstance(search.weight_optimizer, torch.optim.SGD)
    assert (weights["lr"], weights["momentum"], weights["weight_decay"]) == (0.025, 0.9, 3e-4)
    assert isinstance(search.architect.optimizer, torch.optim.Adam)
    assert (arch["lr"], arch["betas"], arch["weight_decay"]) == (3e-4, (0.5, 0.999), 1e-3)
    assert isinstance(search.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert (search.scheduler.T_max, search.scheduler.eta_min) == (2, 0.001)
    assert search.config.grad_clip == 5.0


def test_split_halves_are_equal_and_disjoint(search: Search) -> None:
    assert len(search.weight_indices) == len(search.arch_indices) == 32
    assert not set(search.weight_indices.tolist()) & set(search.arch_indices.tolist())


@pytest.mark.parametrize("order", ["first", "second"])
def test_weight_step_skips_alpha_gradient(search: Search, order: str) -> None:
    search.architect.order = order
    search._start_epoch_order()
    calls = []
    search.alphas.normal.register_hook(lambda gradient: calls.append(gradient))
    before = search.alphas.normal.detach().clone()

    search_step(
        search.network,
        search.alphas,
        search.architect,
        search.weight_optimizer,
        search._batch("weights", 0),
        search._batch("arch", 0),
        learning_rate=0.025,
        grad_clip=5.0,
        settings=device_settings(torch.device("cpu")),
    )

    # The weight step reads detached alphas, so only the architecture step reaches them: once
    # in first order, three times (at w', w+ and w-) in second order.
    assert len(calls) == (1 if order == "first" else 3)
    assert not torch.equal(search.alphas.normal.detach(), before)


def test_second_order_zero_gradient_stays_finite(tiny) -> None:
    network, alphas, optimizer = tiny
    architect = Architect(network, alphas, optimizer, order="second", learning_rate=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    images, labels = random_batch()

    # All-zero weights give a zero weight gradient, for which eps = 0.01 / ||gradient|| is infinite.
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
    architect.step((images, labels), (images, labels), XI)

    assert torch.isfinite(alphas.normal).all()
    assert torch.isfinite(alphas.reduce).all()
