"""The `kzoo` command line: a thin layer over the Python API.

Subcommands register themselves with `kzoo.commands.base.command`: list/show/run here, the
others in one module each under `kzoo.commands`, all imported on start. A `UserError` becomes
one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from kzoo import callbacks, commands, data, recipes, zoo
from kzoo.commands.base import COMMANDS, _add_run_flags, arguments, command, load_recipe_from_args
from kzoo.errors import UserError
from kzoo.optimizers import OPTIMIZER_DESCRIPTIONS
from kzoo.safe_load import add_trust_model_flag
from kzoo.tables import print_table

LISTABLE = ("recipes", "models", "datasets", "activations", "initializers", "norms", "schedules", "callbacks",
            "backbones", "optimizers")


@arguments(lambda p: p.add_argument("what", nargs="?", default="recipes", choices=LISTABLE,
                                    help="what to list. Defaults to recipes."))
@command("list", help="list recipes, models, datasets and building blocks")
def cmd_list(args):
    if args.what == "recipes":
        rows = []
        for name in recipes.list_recipes():
            r = recipes.load(name)
            rows.append([name, r.description, r.model["name"], r.data.dataset, str(r.epochs)])
        print_table(rows, ["name", "description", "model", "dataset", "epochs"])
        return
    if args.what == "optimizers":
        print_table([[k, v] for k, v in OPTIMIZER_DESCRIPTIONS.items()], ["name", "description"])
        return
    registries = {
        "models": zoo.MODELS, "datasets": data.core.DATASETS, "activations": zoo.activations.ACTIVATIONS,
        "initializers": zoo.initializers.INITIALIZERS, "norms": zoo.norms.NORMS,
        "schedules": callbacks.schedules.SCHEDULES, "callbacks": callbacks.CALLBACKS,
        "backbones": zoo.backbones.BACKBONES,
    }
    registry = registries[args.what]
    rows = []
    for name in registry.list():
        meta = registry.meta(name)
        facts = ", ".join(f"{k}={v}" for k, v in meta.items()
                          if k not in ("description", "builder", "defaults") and not callable(v))
        rows.append([name, meta["description"], facts])
    print_table(rows, ["name", "description", "facts"])
    if args.what == "datasets":
        print("\nAlso: any tensorflow-datasets name (mnist, fashion_mnist, cifar10, cifar100, tf_flowers, ...),"
              "\na folder of class sub-folders, or an .npz file with x_train, y_train, x_test, y_test.")


@arguments(_add_run_flags)
@command("show", help="print the fully resolved recipe")
def cmd_show(args):
    print(load_recipe_from_args(args).to_toml(), end="")


def _run_args(p):
    _add_run_flags(p)
    p.add_argument("--out", help="run directory. Defaults to runs/<recipe>-<timestamp>")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    # A recipe's finetune.backbone may name a model file; trusting it is the caller's decision,
    # never the recipe's.
    add_trust_model_flag(p)


@arguments(_run_args)
@command("run", help="train a recipe, evaluate it and write the run directory")
def cmd_run(args):
    recipe = load_recipe_from_args(args)
    result = recipes.run(recipe, out=args.out, overwrite=args.overwrite, verbose=0 if args.quiet else 2,
                 trust_model=args.trust_model)
    m = result.metrics
    print(f"\n{recipe.name}: test accuracy {m['test_accuracy']:.4f}, test loss {m['test_loss']:.4f}, "
          f"best val accuracy {m['best_val_accuracy']:.4f}")
    print(f"{m['epochs_run']} epochs in {m['train_seconds']:.1f} s ({m['samples_per_second']:.0f} samples/s)")
    print(f"artifacts: {result.out_dir}/ (recipe.toml, history.csv, metrics.json, model.keras, curves.png)")


def build_parser() -> argparse.ArgumentParser:
    for module in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"kzoo.commands.{module.name}")
    parser = argparse.ArgumentParser(prog="kzoo", description="Keras model zoo and recipe runner.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if hasattr(fn, "add_arguments"):
            fn.add_arguments(p)
        p.set_defaults(func=fn)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        code = args.func(args)
        return int(code or 0)
    except UserError as e:
        if debug:
            raise
        print(f"kzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
