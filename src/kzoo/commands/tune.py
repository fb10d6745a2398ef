"""`kzoo tune`: hyperparameter search over a recipe's [tune] space (see kzoo.tuning.search)."""

from __future__ import annotations

from kzoo.commands.base import _add_run_flags, arguments, command, load_recipe_from_args


def _tune_args(p):
    _add_run_flags(p)
    p.add_argument("--tuner", default="random", choices=("random", "bayesian", "hyperband", "grid"),
                   help="search algorithm. Defaults to random.")
    p.add_argument("--max-trials", type=int, default=10, help="trials to run. Defaults to 10.")
    p.add_argument("--max-epochs", type=int, help="epochs per trial (hyperband: the largest). Defaults to the recipe's.")
    p.add_argument("--objective", default="val_accuracy", help="metric to optimize. Defaults to val_accuracy.")
    p.add_argument("--out", help="search directory; run again to resume. Defaults to runs/tune-<recipe>")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier search in --out")
    p.add_argument("--export", metavar="FILE", help="write the best trial as a recipe TOML")
    p.add_argument("--strategy", choices=("auto", "default", "mirrored", "tpu"),
                   help="distribution strategy for each trial. Defaults to the recipe's strategy field.")
    p.add_argument("--role", choices=("chief", "worker"), help="distributed search: this process's role")
    p.add_argument("--oracle", metavar="HOST:PORT", help="distributed search: the chief's address")
    p.add_argument("--tuner-id", help="a worker's id (stable ids let a restarted worker resume its trial)")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="chief: how often it checks. Defaults to 2.")
    p.add_argument("--wait-workers", type=float, default=600.0,
                   help="chief: give up if no worker connects within this many seconds. Defaults to 600.")
    p.add_argument("--trial-timeout", type=float, default=3600.0,
                   help="chief: hand a trial out again (then fail it) after this many seconds. Defaults to 3600.")
    p.add_argument("--connect-timeout", type=float, default=120.0,
                   help="worker: bound on reaching the chief. Defaults to 120.")
    p.add_argument("--prune", choices=("median",),
                   help="stop a trial whose objective after an epoch is worse than the median of the "
                        "earlier trials at that epoch")
    p.add_argument("--prune-warmup", type=int, default=1, metavar="E",
                   help="--prune: no trial stops in its first E epochs. Defaults to 1.")
    p.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="after the search, train the top K trials again with further seeds; best by mean")
    p.add_argument("--confirm-seeds", type=int, default=3, metavar="S",
                   help="--confirm: further seeds per trial. Defaults to 3.")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")


@arguments(_tune_args)
@command("tune", help="search a recipe's [tune] space with KerasTuner (resumable, distributable)")
def cmd_tune(args):
    # KerasTuner (67 modules, 0.2 s) loads only when a search runs, not on every `kzoo` command.
    from kzoo.tuning.search import search

    recipe = load_recipe_from_args(args)
    search(recipe, tuner=args.tuner, max_trials=args.max_trials, max_epochs=args.max_epochs,
           objective=args.objective, out=args.out, overwrite=args.overwrite, strategy=args.strategy,
           role=args.role, oracle=args.oracle, tuner_id=args.tuner_id, export=args.export,
           verbose=0 if args.quiet else 1, poll_seconds=args.poll_seconds, wait_workers=args.wait_workers,
           trial_timeout=args.trial_timeout, connect_timeout=args.connect_timeout, prune=args.prune,
           prune_warmup=args.prune_warmup, confirm=args.confirm, confirm_seeds=args.confirm_seeds)
