"""A fine-tuned model served by LiteRT alone: the exported .tflite takes the user's raw images.

`transfer-mnist-digits` fine-tunes an MNIST-pretrained CNN on scikit-learn's 8x8 digits (pixels
0-16), putting them in MNIST's framing first (resize to 20x20, pad to 28x28, scale to 0-255).
Everything training does to an input belongs in the saved model, so the client here is what a
phone or a server without TensorFlow runs: numpy and `ai_edge_litert`'s interpreter on the raw
8x8x1 digits, nothing else (the script refuses to import tensorflow, keras or kzoo).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter")

# Every epoch count of the recipe cut to one, no scratch baseline (a second training run) and a
# quarter of the filters (a sixteenth of the convolution work, most of it the pretraining epoch
# on mnist-5k): test accuracy about 0.43, well above chance, so equal accuracies mean something.
# Float32 throughout, so the TFLite model and the Keras model evaluate_run loads compute the
# same numbers up to float error.
SHORT = {
    "model.filters": [8, 16, 32],
    "finetune.pretrain.epochs": 1,
    "finetune.stages": ["head:1@1e-3", {"trainable": "all", "epochs": 1, "lr": 3e-4, "lr_factor": 0.5}],
    "finetune.scratch_baseline": False,
    "mixed_precision": "off",
}

# Runs in a fresh interpreter: a meta-path finder refuses tensorflow, keras and kzoo, so the
# client cannot lean on them even indirectly (through ai_edge_litert), and sys.modules is checked.
CLIENT = textwrap.dedent("""
    import json
    import sys

    BLOCKED = ("tensorflow", "keras", "kzoo")


    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the LiteRT client must not import {name}")
            return None


    sys.meta_path.insert(0, Refuse())

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    model_path, data_path, batch_size = sys.argv[1], sys.argv[2], 64
    data = np.load(data_path)
    x, y = data["x_test"], data["y_test"]
    interpreter = Interpreter(model_path=model_path)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    probs = []
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start:start + batch_size], dtype=inp["dtype"])
        interpreter.resize_tensor_input(inp["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        probs.append(np.array(interpreter.get_tensor(out["index"])))
    predicted = np.concatenate(probs).argmax(axis=1)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print(json.dumps({"accuracy": float((predicted == y).mean()), "input_shape": [int(d) for d in inp["shape"]],
                      "num_test": int(len(y))}))
""")


@pytest.mark.slow  # pretraining, fine-tuning, export and a fresh process (50 s on 2 cores); .ci/run runs it
def test_exported_transfer_model_serves_raw_digits_with_litert_alone(tmp_path):
    from kzoo.evaluate import evaluate_run, test_split
    from kzoo.export import export_run
    from kzoo.recipes import load, run

    recipe = load("transfer-mnist-digits", SHORT)
    run_dir = run(recipe, out=str(tmp_path / "run"), verbose=0).out_dir
    expected = evaluate_run(run_dir, write=False)["test_accuracy"]
    exported = export_run(run_dir, "tflite")

    split = test_split(recipe)
    x, y = split.x_test, split.y_test
    assert x.shape[1:] == (8, 8, 1) and 0 <= x.min() and x.max() <= 16  # the raw digits, as loaded
    data = tmp_path / "digits-test.npz"
    np.savez(data, x_test=x, y_test=y)
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    done = subprocess.run([sys.executable, str(client), exported.path, str(data)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])

    assert served["input_shape"][1:] == [8, 8, 1], served
    assert served["num_test"] == len(y)
    # The same predictions up to float error. evaluate_run rounds to 6 decimals; one flipped
    # example of the 360 would move the accuracy by 0.0028.
    assert served["accuracy"] == pytest.approx(expected, abs=1e-6), (served, expected)
