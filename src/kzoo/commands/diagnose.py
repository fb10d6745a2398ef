"""`kzoo diagnose init`: activation and gradient statistics of a deep plain net at initialization."""

from __future__ import annotations

from kzoo import diagnose
from kzoo.commands.base import arguments, command
from kzoo.tables import print_table


def _args(p):
    p.add_argument("what", choices=["init"], help="init: initializer x activation study")
    p.add_argument("--pairs", default=None, metavar="INIT:ACT,...",
                   help="pairs to compare, e.g. he_normal:relu,glorot_normal:tanh. Defaults to "
                        "small_normal:tanh, glorot_normal:tanh, glorot_normal:relu, he_normal:relu, "
                        "lecun_normal:selu, lsuv:relu")
    p.add_argument("--depth", type=int, default=10, help="number of layers. Defaults to 10")
    p.add_argument("--width", type=int, default=1024, help="units per layer. Defaults to 1024")
    p.add_argument("--batch", type=int, default=512, help="Gaussian examples. Defaults to 512")
    p.add_argument("--seed", type=int, default=0, help="seed. Defaults to 0")
    p.add_argument("--out", default="diagnose-init.png", help="histogram grid PNG. Defaults to diagnose-init.png")


@arguments(_args)
@command("diagnose", help="diagnose initialization: per-layer activation and gradient statistics")
def cmd_diagnose(args):
    pairs = diagnose.parse_pairs(args.pairs) if args.pairs else diagnose.DEFAULT_PAIRS
    results = diagnose.init_study(pairs, depth=args.depth, width=args.width, batch=args.batch, seed=args.seed)
    print(f"Deep plain net: {args.depth} layers x {args.width} units, {args.batch} unit-Gaussian inputs; "
          "gradients are of the loss w.r.t. each layer's kernel.\n")
    print_table(diagnose.table_rows(results), diagnose.TABLE_HEADER)
    path = diagnose.plot_init_study(results, args.out)
    print(f"\nhistograms: {path}")
