"""kzoo.train: the training engine. Every path trains through it: a run (a plan of one stage),
staged fine-tuning (a plan of N), a tuner trial (the same fit in its trial folder),
multi-worker training (another step function in the same loop) and the learning-rate finder.

- `distribution.py`: strategy, mixed precision, batch size, steps per execution, decided once.
- `determinism.py`: seeds, XLA and determinism.
- `model.py`: the recipe's model, or a backbone with a new head.
- `compile.py`: one stage's freezing, per-group rates, optimizer and schedule.
- `loop.py`: `fit_plan`, the loop over stages with checkpoints and resume.
- `multiworker.py`: the step function under `MultiWorkerMirroredStrategy`.
- `engine.py`: `train`, from a recipe to a finished run folder.
"""

from kzoo.train.compile import compile_stage, group_multipliers
from kzoo.train.determinism import seed_everything
from kzoo.train.distribution import Setup, decide, resolve_steps_per_execution
from kzoo.train.engine import RunResult, build, evaluate, fit_once, prepare, run_metrics, train
from kzoo.train.loop import FitResult, fit_plan, plan, steps_per_epoch
from kzoo.train.model import build_finetune_model, build_model, replace_head

__all__ = ["FitResult", "RunResult", "Setup", "build", "build_finetune_model", "build_model", "compile_stage",
           "decide", "evaluate", "fit_once", "fit_plan", "group_multipliers", "plan", "prepare", "replace_head",
           "resolve_steps_per_execution", "run_metrics", "seed_everything", "steps_per_epoch", "train"]
