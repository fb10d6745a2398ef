"""kzoo.train: the training engine. Every path trains through it: a run (a plan of one stage),
staged fine-tuning (a plan of N), a tuner trial (the same fit in its trial folder),
multi-worker training (another step function in the same loop) and the learning-rate finder.
The modules, in the order a run uses them: `distribution` (strategy, precision, batch size),
`determinism` (seeds, XLA), `engine` (`train`: data to run folder), `model`, `loop` (`fit_plan`
and `compile_stage`), `multiworker`.
"""

from kzoo.train.determinism import seed_everything
from kzoo.train.distribution import Setup, decide, resolve_steps_per_execution
from kzoo.train.engine import RunResult, build, evaluate, fit_once, prepare, run_metrics, train
from kzoo.train.loop import (
           FitResult,
           compile_stage,
           fit_plan,
           group_multipliers,
           plan,
           steps_per_epoch,
)
from kzoo.train.model import build_finetune_model, build_model, replace_head

__all__ = ["FitResult", "RunResult", "Setup", "build", "build_finetune_model", "build_model", "compile_stage",
           "decide", "evaluate", "fit_once", "fit_plan", "group_multipliers", "plan", "prepare", "replace_head",
           "resolve_steps_per_execution", "run_metrics", "seed_everything", "steps_per_epoch", "train"]
