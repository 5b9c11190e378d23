"""The architecture step of the DARTS bilevel optimisation.

DARTS trains the weights w on the training half and the architecture parameters alpha on the
validation half:

    min_alpha L_val(w*(alpha), alpha)   subject to   w*(alpha) = argmin_w L_train(w, alpha)

First order takes w*(alpha) ~ w and follows grad_alpha L_val(w, alpha). Second order unrolls one
weight step, w' = w - xi * grad_w L_train(w, alpha), and follows

    grad_alpha L_val(w', alpha) - xi * grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)

where the Hessian-vector product is a central finite difference:

    (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps),
    w+- = w +- eps * grad_w' L_val(w', alpha),   eps = 0.01 / ||grad_w' L_val(w', alpha)||.

The scale 0.01 is the DARTS paper's. It is an approximation in a ReLU network: a perturbation
of that size flips the sign of some ReLU inputs, so the difference quotient differs from the
exact derivative at w. With a small enough scale in float64 it matches the exact unrolled
gradient (tests/test_architect.py), which checks the formula itself.

The unrolled weights live in plain tensors passed through `torch.func.functional_call`, so the
network is never copied. Batch-norm buffers are cloned for those passes so that the extra forward
passes leave the network's running statistics as they were. The unrolled step is the step the
weight optimizer (SGD) would take: momentum buffer and weight decay included, gradient clipping
left out, as in `_compute_unrolled_model` of the DARTS authors' architect.py.

The second-order gradient always runs without autocast: the finite difference subtracts two
nearly equal gradients, which bfloat16's 8-bit mantissa would turn into noise.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from kdarts.search.device import DeviceSettings
from kdarts.search.network import ArchitectureParameters, SearchNetwork

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The norm of the weight perturbation in the finite-difference Hessian-vector product.
FINITE_DIFFERENCE_SCALE = 0.01


class Architect:
    """Update the alphas with Adam from first- or second-order DARTS gradients."""

    def __init__(
        self,
        network: SearchNetwork,
        alphas: ArchitectureParameters,
        weight_optimizer: torch.optim.SGD,
        *,
        order: Literal["first", "second"],
        learning_rate: float,
        betas: tuple[float, float],
        weight_decay: float,
        loss_function: LossFunction = nn.functional.cross_entropy,
    ):
        self.network = network
        self.alphas = alphas
        self.weight_optimizer = weight_optimizer
        self.order = order
        self.loss_function = loss_function
        self.optimizer = torch.optim.Adam(alphas.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay)

    def step(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        valid_batch: tuple[torch.Tensor, torch.Tensor],
        weight_learning_rate: float,
        *,
        settings: DeviceSettings | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Take one Adam step on the alphas; return the validation loss and logits (detached).

        `settings` supplies the autocast of a first-order step; second-order steps run in the
        parameters' own precision.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.order == "first":
            with settings.autocast() if settings is not None else nullcontext():
                loss, logits = self._first_order_gradient(valid_batch)
        else:
            loss, logits = self._second_order_gradient(train_batch, valid_batch, weight_learning_rate)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def _first_order_gradient(self, valid_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = valid_batch
        logits = self.network(images, self.alphas.normal, self.alphas.reduce)
        loss = self.loss_function(logits, labels)
        gradients = torch.autograd.grad(loss, [self.alphas.normal, self.alphas.reduce])
        self.alphas.normal.grad, self.alphas.reduce.grad = gradients
        return loss, logits

    def _second_order_gradient(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        valid_batch: tuple[torch.Tensor, torch.Tensor],
        xi: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gradient_normal, gradient_reduce, loss, logits = second_order_alpha_gradient(
            self.network,
            self.alphas,
            self.weight_optimizer,
            train_batch,
            valid_batch,
            xi,
            self.loss_function,
        )
        self.alphas.normal.grad = gradient_normal
        self.alphas.reduce.grad = gradient_reduce
        return loss, logits


def second_order_alpha_gradient(
    network: SearchNetwork,
    alphas: ArchitectureParameters,
    weight_optimizer: torch.optim.SGD,
    train_batch: tuple[torch.Tensor, torch.Tensor],
    valid_batch: tuple[torch.Tensor, torch.Tensor],
    xi: float,
    loss_function: LossFunction = nn.functional.cross_entropy,
    finite_difference_scale: float = FINITE_DIFFERENCE_SCALE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the unrolled DARTS gradient for both alphas, the validation loss and its logits.

    `xi` is the unrolled step's learning rate, and the weight perturbation of the Hessian-vector
    product has norm `finite_difference_scale`.
    """
    names = [name for name, _ in network.named_parameters()]
    weights = [parameter.detach() for _, parameter in network.named_parameters()]
    alpha_normal, alpha_reduce = alphas.normal, alphas.reduce

    def loss_at(weight_values: list[torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        buffers = {name: buffer.clone() for name, buffer in network.named_buffers()}
        parameters = dict(zip(names, weight_values))
        logits = functional_call(network, (parameters, buffers), (batch[0], alpha_normal, alpha_reduce))
        return loss_function(logits, batch[1]), logits

    # w' = w - xi * (momentum * v + grad_w L_train(w) + weight_decay * w), the step SGD would take.
    unrolled = _unrolled_weights(network, weights, weight_optimizer, train_batch, xi, loss_at)

    # grad_alpha and grad_w' of L_val(w', alpha).
    valid_loss, valid_logits = loss_at(unrolled, valid_batch)
    gradients = torch.autograd.grad(valid_loss, [alpha_normal, alpha_reduce, *unrolled])
    direct_normal, direct_reduce, weight_gradients = gradients[0], gradients[1], gradients[2:]

    # Finite-difference Hessian-vector product around w along grad_w' L_val. A zero gradient
    # would give an infinite epsilon, but then the product is zero anyway.
    norm = torch.cat([gradient.reshape(-1) for gradient in weight_gradients]).norm()
    if norm == 0:
        return direct_normal, direct_reduce, valid_loss.detach(), valid_logits.detach()
    epsilon = finite_difference_scale / norm
    plus = [weight + epsilon * gradient for weight, gradient in zip(weights, weight_gradients)]
    minus = [weight - epsilon * gradient for weight, gradient in zip(weights, weight_gradients)]
    plus_normal, plus_reduce = torch.autograd.grad(loss_at(plus, train_batch)[0], [alpha_normal, alpha_reduce])
    minus_normal, minus_reduce = torch.autograd.grad(loss_at(minus, train_batch)[0], [alpha_normal, alpha_reduce])
    hessian_normal = (plus_normal - minus_normal) / (2 * epsilon)
    hessian_reduce = (plus_reduce - minus_reduce) / (2 * epsilon)

    return (
        direct_normal - xi * hessian_normal,
        direct_reduce - xi * hessian_reduce,
        valid_loss.detach(),
        valid_logits.detach(),
    )


def _unrolled_weights(
    network: SearchNetwork,
    weights: list[torch.Tensor],
    weight_optimizer: torch.optim.SGD,
    train_batch: tuple[torch.Tensor, torch.Tensor],
    xi: float,
    loss_at: Callable[[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
) -> list[torch.Tensor]:
    group = weight_optimizer.param_groups[0]
    momentum, weight_decay = group["momentum"], group["weight_decay"]

    leaves = [weight.requires_grad_(True) if not weight.requires_grad else weight for weight in (w.clone() for w in weights)]
    train_loss, _ = loss_at(leaves, train_batch)
    gradients = torch.autograd.grad(train_loss, leaves)

    unrolled = []
    for parameter, weight, gradient in zip(network.parameters(), weights, gradients):
        step = gradient + weight_decay * weight
        buffer = weight_optimizer.state.get(parameter, {}).get("momentum_buffer")
        if buffer is not None:
            step = step + momentum * buffer
        unrolled.append((weight - xi * step).detach().requires_grad_(True))
    return unrolled
