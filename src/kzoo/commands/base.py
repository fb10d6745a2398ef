"""What every subcommand module shares: the `@command` / `@arguments` registration and the
recipe flags (a name or file, `--set`, `--epochs`, `--seed`).

It sits below both `kzoo.cli` and the command modules, so dependencies point one way:
`kzoo.cli` imports this module and every command module; a command module imports this one,
never `kzoo.cli`.
"""

from __future__ import annotations

from kzoo import recipes

COMMANDS: dict[str, tuple] = {}  # name -> (fn(args), help), in registration order


def command(name: str, help: str):
    """Registers `fn(args)` as a subcommand; `fn.add_arguments(parser)` declares its flags."""

    def wrap(fn):
        COMMANDS[name] = (fn, help)
        return fn

    return wrap


def arguments(fn):
    """Decorator attaching an `add_arguments(parser)` function to a command."""

    def wrap(cmd):
        cmd.add_arguments = fn
        return cmd

    return wrap


def _add_run_flags(p):
    """The recipe flags of `run`, `show`, `lr-find` and `tune`: NAME|FILE, --set, --epochs, --seed."""
    p.add_argument("recipe", help="a shipped recipe name (kzoo list recipes) or a TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optimizer.lr=0.01 (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set epochs=N")
    p.add_argument("--seed", type=int, help="shorthand for --set seed=N")


def load_recipe_from_args(args):
    """The recipe a command's positional name and --set/--epochs/--seed flags describe."""
    overrides = list(args.overrides)
    if getattr(args, "epochs", None) is not None:
        overrides.append(f"epochs={args.epochs}")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    return recipes.load(args.recipe, overrides)
