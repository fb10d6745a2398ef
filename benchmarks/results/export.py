"""Section `export`: every `kzoo export` format of the seed-0 `cnn-digits` run, its size and
the test accuracy and largest probability difference of the exported model."""

from __future__ import annotations

import os
import time

from benchmarks import results
from benchmarks.results import ensemble

# (format, quantize) pairs, in the order of the table.
FORMATS = (("savedmodel", "none"), ("tflite", "none"), ("tflite", "float16"), ("tflite", "dynamic"),
           ("keras", "none"))


def measure() -> dict:
    import keras

    import kzoo  # noqa: F401  (registers the custom layers before loading)
    from kzoo.export import export_run

    started = time.perf_counter()
    run = ensemble.run_dir(0)
    if not os.path.exists(os.path.join(run, "metrics.json")):
        ensemble.train(0)
    rows = []
    for fmt, quantize in FORMATS:
        print(f"export: kzoo export {fmt} --quantize {quantize} ...", flush=True)
        r = export_run(run, fmt, None, quantize, overwrite=True, check=True)
        rows.append({"format": fmt, "quantize": quantize, "size_bytes": r.size_bytes,
                     "keras_accuracy": r.keras_accuracy, "exported_accuracy": r.exported_accuracy,
                     "max_abs_diff": r.max_abs_diff})
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    payload = {**results.header("export", time.perf_counter() - started), "run": "cnn-digits, seed 0",
               "parameters": int(model.count_params()), "formats": rows}
    results.write("export", payload)
    return payload
