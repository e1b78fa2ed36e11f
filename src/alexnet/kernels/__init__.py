"""The fast kernels, each a drop-in for one of the plain model's modules and tested
against it, and the execution plan (`plan.resolve_plan`) that chooses them once per run."""

from .plan import Plan, plain, resolve_plan

__all__ = ["Plan", "plain", "resolve_plan"]
