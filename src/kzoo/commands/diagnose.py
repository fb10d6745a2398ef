"""`kzoo diagnose init`: activation and gradient statistics of a deep plain net at initialization.
`kzoo diagnose RUN_DIR`: whether a finished run stayed at chance, and the likely cause."""

from __future__ import annotations

from kzoo import diagnose
from kzoo.commands.base import arguments, command
from kzoo.errors import UserError
from kzoo.safe_load import add_trust_model_flag
from kzoo.tables import print_table

# `init`'s flags and their defaults; None in the parser, so a run diagnosis can refuse them.
INIT_DEFAULTS = {"pairs": None, "depth": 10, "width": 1024, "batch": 512, "seed": 0, "out": "diagnose-init.png"}


def _args(p):
    p.add_argument("what", metavar="init|RUN_DIR",
                   help="init: initializer x activation study; RUN_DIR: a finished run folder, checked for a "
                        "training loss at chance and its likely cause")
    p.add_argument("--pairs", default=None, metavar="INIT:ACT,...",
                   help="pairs to compare, e.g. he_normal:relu,glorot_normal:tanh. Defaults to "
                        "small_normal:tanh, glorot_normal:tanh, glorot_normal:relu, he_normal:relu, "
                        "lecun_normal:selu, lsuv:relu")
    p.add_argument("--depth", type=int, default=None, help="init: number of layers. Defaults to 10")
    p.add_argument("--width", type=int, default=None, help="init: units per layer. Defaults to 1024")
    p.add_argument("--batch", type=int, default=None, help="init: Gaussian examples. Defaults to 512")
    p.add_argument("--seed", type=int, default=None, help="init: seed. Defaults to 0")
    p.add_argument("--out", default=None, help="init: histogram grid PNG. Defaults to diagnose-init.png")
    add_trust_model_flag(p)  # RUN_DIR: the run's model.keras is loaded for the feature check


@arguments(_args)
@command("diagnose", help="diagnose initialization (init), or why a finished run did not learn (RUN_DIR)")
def cmd_diagnose(args):
    if args.what == "init":
        return _init(args)
    given = [f"--{name}" for name in INIT_DEFAULTS if getattr(args, name) is not None]
    if given:
        raise UserError(f"{', '.join(given)}: only for `kzoo diagnose init`, not a run folder. Received: {args.what}")
    result = diagnose.diagnose_run(args.what, trust_model=args.trust_model)
    print(f"{result.run_dir}: {result.line}")
    if result.note:
        print(f"note: {result.note}")
    return 0


def _init(args):
    if args.trust_model:
        raise UserError("--trust-model applies to `kzoo diagnose RUN_DIR` only. Received: init")
    for name, default in INIT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    pairs = diagnose.parse_pairs(args.pairs) if args.pairs else diagnose.DEFAULT_PAIRS
    results = diagnose.init_study(pairs, depth=args.depth, width=args.width, batch=args.batch, seed=args.seed)
    print(f"Deep plain net: {args.depth} layers x {args.width} units, {args.batch} unit-Gaussian inputs; "
          "gradients are of the loss w.r.t. each layer's kernel.\n")
    print_table(diagnose.table_rows(results), diagnose.TABLE_HEADER)
    path = diagnose.plot_init_study(results, args.out)
    print(f"\nhistograms: {path}")
