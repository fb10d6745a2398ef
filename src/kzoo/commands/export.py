"""`kzoo export RUN_DIR --format savedmodel|tflite|keras`: a run's model, ready to serve."""

from __future__ import annotations

from kzoo.commands.base import arguments, command
from kzoo.export import FORMATS, QUANTIZATIONS, export_run
from kzoo.safe_load import add_trust_model_flag


def _args(p):
    p.add_argument("run", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--format", default="savedmodel", choices=FORMATS, help="Defaults to savedmodel")
    p.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                   help="TFLite only: float16 weights or dynamic-range int8 weights. Defaults to none")
    p.add_argument("--out", help="output path. Defaults to RUN_DIR/export/...")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at the output path")
    p.add_argument("--no-check", action="store_true", help="skip predicting the test split with the export")
    add_trust_model_flag(p)


@arguments(_args)
@command("export", help="export a run's model: TF SavedModel, TFLite (quantized) or .keras")
def cmd_export(args):
    r = export_run(args.run, args.format, args.out, args.quantize, args.overwrite, check=not args.no_check,
                   trust_model=args.trust_model)
    kind = r.format + (f" ({r.quantize})" if r.quantize != "none" else "")
    print(f"exported {kind}: {r.path} ({r.size_bytes / 1024:.1f} KiB)")
    if r.keras_accuracy is not None:
        print(f"test accuracy: keras {r.keras_accuracy:.4f}, exported {r.exported_accuracy:.4f} "
              f"(change {r.exported_accuracy - r.keras_accuracy:+.4f}); largest probability difference "
              f"{r.max_abs_diff:.2e}")
    return 0
