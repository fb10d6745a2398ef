"""`kzoo lr-find NAME|FILE`: the learning-rate range test on a recipe's model and data."""

from __future__ import annotations

import math
import os

import keras

from kzoo.callbacks import lr_find
from kzoo.commands.base import _add_run_flags, arguments, command, load_recipe_from_args
from kzoo.errors import RecipeError
from kzoo.finetune.structure import model_structure
from kzoo.runs import atomic_write, default_out
from kzoo.train import Session, compile_stage, plan, steps_per_epoch


def _args(p):
    _add_run_flags(p)
    p.add_argument("--out", help="where lr_find.png/.csv go. Defaults to runs/<recipe>-lr-find-<timestamp>")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first rate. Defaults to 1e-7")
    p.add_argument("--end-lr", type=float, default=10.0, help="last rate. Defaults to 10")
    p.add_argument("--steps", type=int, default=100, help="at most this many steps. Defaults to 100")
    p.add_argument("--apply", action="store_true",
                   help="write a copy of the recipe with optimizer.lr set to the suggestion (<out>/recipe.toml)")


def find_lr(recipe, start_lr=1e-7, end_lr=10.0, steps=100):
    """Builds the recipe's data and model through the engine's `Session` (so the model starts from
    the weights `kzoo run` starts from), compiles its first stage (as `kzoo run` would: a staged
    recipe's freezing and per-group rates included) and runs `lr_find` on it."""
    policy = keras.config.dtype_policy()  # the recipe's precision sets the global one: put it back
    try:
        session = Session(recipe)
        setup, data = session.setup, session.data
        model = session.build()
        stages, staged = plan(recipe)
        per_epoch = steps_per_epoch(recipe, data, setup)
        compile_stage(model, recipe, stages[0], model_structure(model) if staged else None, per_epoch,
                      setup=setup, data=data)
        batches = data.epochs(setup.batch_size, recipe.seed, math.ceil(steps / per_epoch) + 1)
        return lr_find(model, batches, start_lr=start_lr, end_lr=end_lr, num_steps=steps)
    finally:
        keras.config.set_dtype_policy(policy)


@arguments(_args)
@command("lr-find", help="sweep the learning rate (range test), plot the loss and suggest a rate")
def cmd_lr_find(args):
    recipe = load_recipe_from_args(args)
    if not 0 < args.start_lr < args.end_lr:
        raise RecipeError(f"--start-lr must be positive and below --end-lr. Received: start_lr={args.start_lr}")
    if args.steps < 5:
        raise RecipeError(f"--steps must be at least 5. Received: steps={args.steps}")
    out = args.out or default_out(f"{recipe.name}-lr-find")
    os.makedirs(out, exist_ok=True)
    result = find_lr(recipe, args.start_lr, args.end_lr, args.steps)

    lines = ["step,learning_rate,loss,smoothed_loss"]
    lines += [f"{r['step']},{r['learning_rate']:.6g},{r['loss']:.6g},{r['smoothed_loss']:.6g}" for r in result.rows()]
    atomic_write(os.path.join(out, "lr_find.csv"), "\n".join(lines) + "\n")
    suggestion = float(f"{result.suggestion:.2g}")
    result.plot(os.path.join(out, "lr_find.png"),
                title=f"{recipe.name}: {recipe.optimizer.name}, suggestion {suggestion:g}")
    why = "the loss blew up" if result.stopped_early else "the sweep ended"
    print(f"{recipe.name}: {len(result.lrs)} steps from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e} ({why}).")
    print(f"suggested learning rate: {suggestion:g} (steepest descent of the smoothed loss; "
          f"recipe has {recipe.optimizer.lr:g})")
    if args.apply:
        recipe.optimizer.lr = suggestion
        path = os.path.join(out, "recipe.toml")
        atomic_write(path, recipe.to_toml())
        print(f"wrote {path}: run it with `kzoo run {path}`")
    print(f"artifacts: {out}/ (lr_find.png, lr_find.csv{', recipe.toml' if args.apply else ''})")
