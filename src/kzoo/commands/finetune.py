"""`kzoo finetune`: fine-tune a backbone on a dataset with a stage plan, without writing a recipe.

It builds the recipe the flags describe (`kzoo finetune ... --show` prints it) and runs it with
`kzoo.recipes.run`, the path `kzoo run transfer-...` takes.
"""

from __future__ import annotations

import os

from kzoo.commands.base import arguments, command
from kzoo.recipes import run
from kzoo.recipes.loader import apply_overrides
from kzoo.recipes.schema import build_recipe
from kzoo.safe_load import add_trust_model_flag
from kzoo.zoo import MODELS

DEFAULT_STAGES = "head:3@1e-3, top2:3@1e-4, all:4@1e-5"


def _args(p):
    p.add_argument("--backbone", required=True,
                   help="a zoo model or keras.applications name (kzoo list backbones), a model.keras / run "
                        "directory from an earlier kzoo run, or hub:PRESET_OR_DIR (a KerasHub preset; the hub extra)")
    p.add_argument("--data", required=True, help="a dataset name (kzoo list datasets), a folder or an .npz file")
    p.add_argument("--stages", default=DEFAULT_STAGES,
                   help=f"stage plan WHAT:EPOCHS@LR, ... (WHAT: head, topK, all; LR: a rate or LO..HI). "
                        f"Defaults to \"{DEFAULT_STAGES}\"")
    p.add_argument("--weights", default="",
                   help="imagenet, none, or a weights file. Defaults to imagenet for a keras.applications backbone "
                        "(from Keras's cache ~/.keras/models, else downloaded), the preset's own for hub:, none otherwise")
    p.add_argument("--layer-decay", type=float, default=0.0,
                   help="layer-wise rate decay: the group k below the head learns layer_decay**k times the rate "
                        "(a ViT: per transformer block). Defaults to 0 (off)")
    p.add_argument("--train-bn", action="store_true", help="train BatchNormalization once its group is unfrozen")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize images (folders, tfds)")
    p.add_argument("--labels-per-class", type=int, default=0, help="keep this many training labels per class")
    p.add_argument("--batch-size", type=int, help="examples per batch")
    p.add_argument("--optimizer", default="adam", help="sgd, adagrad, rmsprop, adam or adamw. Defaults to adam")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set finetune.head_dropout=0.2 (repeatable)")
    p.add_argument("--seed", type=int, help="shorthand for --set seed=N")
    p.add_argument("--out", help="run directory. Defaults to runs/finetune-<backbone>-<timestamp>")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--show", action="store_true", help="print the recipe and stop")
    add_trust_model_flag(p)  # for a --backbone model file; never part of the recipe


def recipe_from_args(args):
    """The recipe `kzoo finetune`'s flags describe."""
    label = os.path.basename(os.path.normpath(args.backbone.removeprefix("hub:"))).replace(".keras", "")
    raw = {"name": f"finetune-{label}", "description": f"fine-tune {args.backbone} on {args.data}",
           "data": {"dataset": args.data}, "optimizer": {"name": args.optimizer},
           "finetune": {"stages": args.stages, "weights": args.weights, "train_bn": args.train_bn,
                        "labels_per_class": args.labels_per_class}}
    if args.layer_decay:
        raw["finetune"]["layer_decay"] = args.layer_decay
    if args.backbone in MODELS:
        raw["model"] = {"name": args.backbone}  # a zoo model: built from the [model] table
    else:
        raw["finetune"]["backbone"] = args.backbone
    if args.image_size:
        raw["data"]["image_size"] = list(args.image_size)
    if args.batch_size:
        raw["data"]["batch_size"] = args.batch_size
    if args.seed is not None:
        raw["seed"] = args.seed
    return build_recipe(apply_overrides(raw, args.overrides))


@arguments(_args)
@command("finetune", help="fine-tune a backbone on a dataset in stages (frozen groups, per-group rates)")
def cmd_finetune(args):
    recipe = recipe_from_args(args)
    if args.show:
        print(recipe.to_toml(), end="")
        return 0
    result = run(recipe, out=args.out, overwrite=args.overwrite, verbose=0 if args.quiet else 2,
                 trust_model=args.trust_model)
    m = result.metrics
    print(f"\n{recipe.name}: test accuracy {m['test_accuracy']:.4f} after stages {', '.join(m['stages'])}")
    print(f"artifacts: {result.out_dir}/ (recipe.toml, history.csv, metrics.json, model.keras, curves.png)")
    return 0
