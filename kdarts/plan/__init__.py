"""Architecture plans: what a DARTS search found, in a validated, tool-independent JSON format.

A plan comes from the search's alphas (`derive_plan`), from a DARTS genotype string
(`plan_from_genotype`) or from an NNI export (`plan_from_nni`, `convert_plan`), and turns into
a genotype string, a text report or a diagram of its cells.
"""

from kdarts.plan.derive import derive_plan
from kdarts.plan.draw import draw_plan
from kdarts.plan.genotype import plan_from_genotype, plan_to_genotype
from kdarts.plan.model import (
    DARTS_PRIMITIVES,
    Alphas,
    Cell,
    Edge,
    Plan,
    Provenance,
    load_alphas,
    load_plan,
    save_plan,
)
from kdarts.plan.nni import convert_plan, plan_from_nni
from kdarts.plan.report import CellReport, PlanReport, format_plan, plan_report

__all__ = [
    "DARTS_PRIMITIVES",
    "Alphas",
    "Cell",
    "CellReport",
    "Edge",
    "Plan",
    "PlanReport",
    "Provenance",
    "convert_plan",
    "derive_plan",
    "draw_plan",
    "format_plan",
    "load_alphas",
    "load_plan",
    "plan_from_genotype",
    "plan_from_nni",
    "plan_report",
    "plan_to_genotype",
    "save_plan",
]
