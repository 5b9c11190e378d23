"""One step of the DARTS bilevel optimisation, shared by the search loop and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdarts.search.architect import Architect
from kdarts.search.device import DeviceSettings
from kdarts.search.network import ArchitectureParameters, SearchNetwork

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepOutput:
    """Losses and logits of one step, detached, for the epoch's running sums."""

    train_loss: torch.Tensor
    train_logits: torch.Tensor
    arch_loss: torch.Tensor
    arch_logits: torch.Tensor


def search_step(
    network: SearchNetwork,
    alphas: ArchitectureParameters,
    architect: Architect,
    weight_optimizer: torch.optim.SGD,
    train_batch: Batch,
    arch_batch: Batch,
    *,
    learning_rate: float,
    grad_clip: float,
    settings: DeviceSettings,
) -> StepOutput:
    """Update the alphas on `arch_batch`, then take one SGD step on the weights with `train_batch`.

    `learning_rate` is the weights' current learning rate, which the second-order architecture
    gradient uses as the unrolled step size.
    """
    network.train()
    arch_loss, arch_logits = architect.step(train_batch, arch_batch, learning_rate, settings=settings)

    weight_optimizer.zero_grad(set_to_none=True)
    images, labels = train_batch
    with settings.autocast():
        logits = network(images, alphas.normal.detach(), alphas.reduce.detach())
        loss = nn.functional.cross_entropy(logits, labels)
    loss.backward()
    nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
    weight_optimizer.step()

    return StepOutput(loss.detach(), logits.detach(), arch_loss, arch_logits)
