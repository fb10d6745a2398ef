"""`kzoo eval RUN_DIR [RUN_DIR ...]`: test metrics, plots and calibration of one run, or an
ensemble of several; test-time augmentation and Monte-Carlo dropout on request."""

from __future__ import annotations

from kzoo.commands.base import arguments, command
from kzoo.errors import UserError
from kzoo.evaluate import evaluate_ensemble, evaluate_run
from kzoo.safe_load import add_trust_model_flag
from kzoo.tables import print_table


def _args(p):
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (several: an ensemble)")
    p.add_argument("--data", help="evaluate on this dataset (name, folder or .npz) with the recipe's "
                                  "split settings. Defaults to the recipe's dataset")
    p.add_argument("--tta", type=int, default=0, metavar="N",
                   help="average over N views: the input and N-1 draws of the recipe's augmentation")
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                   help="N Monte-Carlo dropout passes: predictive uncertainty (one run only)")
    p.add_argument("--bins", type=int, default=15, help="calibration bins. Defaults to 15")
    p.add_argument("--seed", type=int, default=0, help="seed of augmentations and dropout. Defaults to 0")
    p.add_argument("--out", help="ensemble only: a folder for ensemble.json and its plots")
    add_trust_model_flag(p)


def _f(v):
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


@arguments(_args)
@command("eval", help="evaluate runs: metrics, confusion, calibration, ensembles, TTA, MC dropout")
def cmd_eval(args):
    if args.bins < 1:
        raise UserError(f"--bins must be at least 1. Received: bins={args.bins}")
    if len(args.runs) == 1:
        if args.out:
            raise UserError(f"--out is for ensembles; one run writes into its own folder. Received: out={args.out}")
        r = evaluate_run(args.runs[0], data=args.data, tta=args.tta, mc_dropout=args.mc_dropout,
                         bins=args.bins, seed=args.seed, trust_model=args.trust_model)
        print(f"{r['recipe']} on {r['dataset']} ({r['num_test']} test examples): accuracy {r['test_accuracy']:.4f}, "
              f"loss {r['test_loss']:.4f}, ECE {r['ece']:.4f}, macro F1 {r['macro_f1']:.4f}\n")
        print_table([[c["class"], _f(c["precision"]), _f(c["recall"]), _f(c["f1"]), str(c["support"])]
                     for c in r["per_class"]], ["class", "precision", "recall", "f1", "support"])
        if "tta" in r:
            t = r["tta"]
            print(f"\ntest-time augmentation, {t['views']} views: accuracy {t['accuracy_without']:.4f} -> "
                  f"{t['accuracy']:.4f}, loss {t['loss_without']:.4f} -> {t['loss']:.4f}")
        if "mc_dropout" in r:
            m = r["mc_dropout"]
            print(f"\nMC dropout, {m['samples']} passes: accuracy {m['accuracy']:.4f}, mean predictive entropy "
                  f"{m['mean_entropy']:.4f} (right {_f(m['entropy_correct'])}, wrong {_f(m['entropy_wrong'])}), "
                  f"mutual information {m['mean_mutual_information']:.4f}")
        print(f"\nartifacts: {args.runs[0]}/ ({', '.join(r['plots'])}, eval.json, report.html)")
        return 0
    if args.mc_dropout:
        raise UserError(f"--mc-dropout takes one run. Received: {len(args.runs)} runs")
    r = evaluate_ensemble(args.runs, data=args.data, tta=args.tta, bins=args.bins, seed=args.seed, out=args.out,
                          trust_model=args.trust_model)
    tta = "tta" in r
    rows = []
    for m in r["members"]:
        row = [m["run"], str(m["seed"]), _f(m["test_accuracy"]), _f(m["test_loss"]), _f(m["ece"])]
        rows.append(row + ([_f(m["tta_accuracy"])] if tta else []))
    e = r["ensemble"]
    rows.append(["mean member", "", _f(r["mean_member_accuracy"]), "", ""] + ([_f(r["tta"]["mean_member_accuracy"])] if tta else []))
    rows.append([f"ensemble of {e['size']} (mean probability)", "", _f(e["test_accuracy"]), _f(e["test_loss"]),
                 _f(e["ece"])] + ([_f(r["tta"]["ensemble_accuracy"])] if tta else []))
    header = ["run", "seed", "accuracy", "loss", "ECE"] + ([f"accuracy, TTA x{args.tta}"] if tta else [])
    print(f"{r['dataset']}, {r['num_test']} test examples\n")
    print_table(rows, header)
    gain = e["test_accuracy"] - r["mean_member_accuracy"]
    print(f"\nensemble vs mean member: {gain:+.4f} accuracy")
    if args.out:
        print(f"artifacts: {args.out}/ ({', '.join(r['plots'])}, ensemble.json)")
    return 0
