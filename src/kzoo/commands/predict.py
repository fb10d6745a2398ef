"""`kzoo predict RUN_DIR|MODEL PATH...`: the classes of new image files, folders and `.npz`
arrays, as a CSV file or a table."""

from __future__ import annotations

import sys

from kzoo.commands.base import arguments, command
from kzoo.prediction import check_output, predict, skipped_message, write_csv
from kzoo.safe_load import add_trust_model_flag
from kzoo.tables import print_table


def _args(p):
    p.add_argument("model", metavar="RUN_DIR|MODEL", help="a run directory or a .keras model file")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders of images (searched recursively) or .npz files (their "
                        "array x, else x_test, else x_train; rows are named file.npz[i])")
    p.add_argument("--top", type=int, default=0, metavar="K",
                   help="add the K most probable classes (top1_label, top1_probability, ...). Defaults to 0")
    p.add_argument("--out", metavar="FILE.csv", help="write a CSV file instead of printing a table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="average over N views: the input and N-1 draws of the recipe's augmentation")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="inputs decoded and predicted at a time. Defaults to 256")
    p.add_argument("--seed", type=int, default=0, help="seed of the --tta augmentations. Defaults to 0")
    add_trust_model_flag(p)


@arguments(_args)
@command("predict", help="predict the classes of image files, folders or .npz arrays with a run's model")
def cmd_predict(args):
    if args.out:
        check_output(args.out, args.overwrite)  # before any work, not after it
    preds = predict(args.model, args.paths, top=args.top, tta=args.tta, batch_size=args.batch_size,
                    trust_model=args.trust_model, seed=args.seed, warn=False)
    if preds.skipped:
        print(f"kzoo: warning: {skipped_message(preds.skipped)}", file=sys.stderr)
    if args.out:
        write_csv(preds, args.out, overwrite=args.overwrite)
        print(f"{len(preds.paths)} predictions written to {args.out}")
        return 0
    columns = preds.columns
    print_table([[str(row[c]) for c in columns] for row in preds.rows], columns)
    return 0
