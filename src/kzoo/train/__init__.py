"""kzoo.train: the one training engine behind runs, staged fine-tuning, tuner trials,
multi-worker training and the learning-rate finder (docs/architecture.md has the map)."""

from kzoo.train.determinism import seed_everything
from kzoo.train.distribution import Setup, decide, resolve_steps_per_execution
from kzoo.train.engine import RunResult, evaluate, fit_once, run_metrics, train
from kzoo.train.loop import (
           FitResult,
           compile_stage,
           fit_plan,
           group_multipliers,
           plan,
           steps_per_epoch,
)
from kzoo.train.model import build_finetune_model, build_model, replace_head
from kzoo.train.session import RunData, Session

__all__ = ["FitResult", "RunData", "RunResult", "Session", "Setup", "build_finetune_model", "build_model",
           "compile_stage", "decide", "evaluate", "fit_once", "fit_plan", "group_multipliers", "plan", "replace_head",
           "resolve_steps_per_execution", "run_metrics", "seed_everything", "steps_per_epoch", "train"]
