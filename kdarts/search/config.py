"""Settings of a DARTS search, with the defaults of the DARTS paper's CIFAR-10 search."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdarts.plan import DARTS_PRIMITIVES


class SearchConfig(BaseModel):
    """Everything that determines a search's result; a resumed search must match it exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = "sample"
    epochs: int = Field(50, ge=1)
    layers: int = Field(8, ge=3)
    init_channels: int = Field(16, ge=2)
    nodes: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=2)
    order: Literal["first", "second"] = "first"
    seed: int = 2
    primitives: tuple[str, ...] = DARTS_PRIMITIVES
    # Weights: SGD with momentum, cosine schedule from learning_rate down to learning_rate_min.
    learning_rate: float = Field(0.025, gt=0)
    learning_rate_min: float = Field(0.001, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    # Architecture parameters: Adam.
    arch_learning_rate: float = Field(3e-4, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)
    arch_betas: tuple[float, float] = (0.5, 0.999)
    # Share of the training images used for the weights; the rest trains the alphas.
    train_portion: float = Field(0.5, gt=0, lt=1)
    max_train_images: int | None = Field(None, ge=2, description="use at most this many training images")

    @field_validator("primitives")
    @classmethod
    def _check_primitives(cls, primitives: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in primitives if name not in DARTS_PRIMITIVES]
        if unknown:
            raise ValueError(f"unknown primitives {unknown}; choose from {list(DARTS_PRIMITIVES)}")
        if len(set(primitives)) != len(primitives):
            raise ValueError(f"primitives must be unique, got {list(primitives)}")
        if not [name for name in primitives if name != "none"]:
            raise ValueError("primitives need at least one operation other than 'none'")
        return primitives

    @model_validator(mode="after")
    def _check_learning_rates(self) -> SearchConfig:
        if self.learning_rate_min > self.learning_rate:
            raise ValueError(
                f"learning_rate_min ({self.learning_rate_min}) must not exceed learning_rate ({self.learning_rate})"
            )
        return self
