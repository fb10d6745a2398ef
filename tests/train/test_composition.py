"""Every recipe setting works on every training path: a pairwise composition test.

Pairwise over path {plain run, staged run, tuner trial} x optimizer {adam, sgd with Nesterov,
gains} x callbacks {none, momentum_warmup, update_ratio adaptive, reduce_lr_on_plateau with
cosine, early_stopping} x mixed precision {off, mixed_bfloat16} x strategy {default, mirrored on
two logical CPUs}: every pair of values appears in at least one combination. Each combination
trains a few epochs through the engine in one subprocess (the CPU is split into two logical
devices before TensorFlow starts) and reports what the trained (and, for runs, the saved) model
carries. The combinations that must be refused are listed (`REFUSED`); any other refusal fails,
and so does a listed one that trains.
"""

import itertools
import json
import subprocess
import sys
import textwrap

import pytest

FACTORS = {
    "path": ["plain", "staged", "trial"],
    "optimizer": ["adam", "sgd_nesterov", "gains"],
    "callbacks": ["none", "momentum_warmup", "update_ratio", "plateau_cosine", "early_stopping"],
    "precision": ["off", "mixed_bfloat16"],
    "strategy": ["default", "mirrored"],
    "levers": ["none", "ema_best", "soft_labels_metrics"],
}

# Combinations no path can honour, each refused in one line when the recipe loads (before any
# training, so they cost nothing), as (path, optimizer, callbacks, precision, strategy, levers).
# Every pairwise combination of FACTORS trains; a refusal of any of them is a regression.
REFUSED = {
    ("plain", "adagrad", "momentum_warmup", "off", "default", "none"),  # Adagrad has no momentum to warm up
    # EMA validates on the averaged weights; restoring early stopping's raw best weights would undo them
    ("plain", "adam", "early_stopping_restore", "off", "default", "ema_best"),
}

OPTIMIZERS = {"adam": {"name": "adam"},
              "sgd_nesterov": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
              "gains": {"name": "gains", "lr": 0.02, "momentum": 0.5},
              "adagrad": {"name": "adagrad"}}
CALLBACKS = {"none": {}, "momentum_warmup": {"momentum_warmup": {"start": 0.5, "end": 0.9, "warmup_epochs": 2}},
             "update_ratio": {"update_ratio": {"adaptive": True, "every_n_steps": 5}},
             "plateau_cosine": {"reduce_lr_on_plateau": {"patience": 0, "min_delta": 1.0}},
             "early_stopping": {"early_stopping": {"patience": 0, "min_delta": 1.0, "restore_best_weights": False}},
             "early_stopping_restore": {"early_stopping": {"patience": 0, "restore_best_weights": True}}}
# The accuracy levers (gradient accumulation is left out: it runs on one device only, refused
# under a strategy with several replicas; tests/train/test_levers_training.py covers it).
LEVERS = {"none": {},
          "ema_best": {"optimizer": {"ema": 0.9}, "checkpoint": "best"},
          "soft_labels_metrics": {"loss": {"label_smoothing": 0.1, "class_weight": "balanced"},
                                  "data": {"augment": {"mixup": 0.2}}, "metrics": ["accuracy", "top5", "macro_f1"]}}


def raw_recipe(c):
    """The recipe (a dict, as a TOML file would give) for combination `c`."""
    # XLA is left out here (tests/test_determinism.py covers it): each compile would cost seconds
    raw = {"name": "combo", "seed": 0, "epochs": 4, "jit_compile": False,
           "data": {"dataset": "digits", "batch_size": 128},
           "model": {"name": "mlp", "depth": 2, "width": 16},
           "optimizer": OPTIMIZERS[c["optimizer"]], "callbacks": CALLBACKS[c["callbacks"]],
           "mixed_precision": c["precision"], "strategy": c["strategy"]}
    if c["callbacks"] == "plateau_cosine":
        raw["schedule"] = {"name": "cosine"}
    for key, value in LEVERS[c["levers"]].items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    if c["path"] == "staged":
        raw.pop("epochs")
        raw["finetune"] = {"stages": ["head:1@1e-2", "all:3@1e-3"]}
    return raw


def pairwise(factors):
    """A small list of combinations covering every pair of values (greedy, deterministic)."""
    names = list(factors)
    uncovered = {((a, va), (b, vb)) for a, b in itertools.combinations(names, 2)
                 for va in factors[a] for vb in factors[b]}
    chosen = []
    while uncovered:
        best, gain = None, -1
        for combo in itertools.product(*factors.values()):
            c = dict(zip(names, combo))
            pairs = {((a, c[a]), (b, c[b])) for a, b in itertools.combinations(names, 2)}
            if len(pairs & uncovered) > gain:
                best, gain = c, len(pairs & uncovered)
        chosen.append(best)
        uncovered -= {((a, best[a]), (b, best[b])) for a, b in itertools.combinations(names, 2)}
    return chosen


SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras, keras_tuner
    import kzoo
    from kzoo.optimizers import composed_class
    from kzoo.recipes.schema import build_recipe
    from kzoo.tuning.hypermodel import RecipeHyperModel
    from kzoo.train.distribution import make_strategy

    EXPECTED_CLASS = {"adam": keras.optimizers.Adam, "sgd_nesterov": keras.optimizers.SGD,
                      "gains": kzoo.optimizers.AdaptiveGainSGD, "adagrad": keras.optimizers.Adagrad}

    def report(c, model, rows, saved=None):
        dense = [l for l in model._flatten_layers() if isinstance(l, keras.layers.Dense)][0]
        opt = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        loss = model.loss
        out = {"rows": len(rows), "columns": sorted(rows[0]),
               "use_ema": bool(opt.use_ema), "label_smoothing": float(getattr(loss, "label_smoothing", 0.0)),
               "class_weighted": getattr(loss, "class_weight", None) is not None,
               "lr": [r["learning_rate"] for r in rows],
               "policy": dense.dtype_policy.name,
               "optimizer_ok": isinstance(opt, composed_class(EXPECTED_CLASS[c["optimizer"]])),
               "nesterov": bool(getattr(opt, "nesterov", False)),
               "mirrored": "Mirrored" in type(model.trainable_weights[0].value).__name__}
        if saved is not None:
            loaded = keras.saving.load_model(saved)
            ldense = [l for l in loaded._flatten_layers() if isinstance(l, keras.layers.Dense)][0]
            lopt = getattr(loaded.optimizer, "inner_optimizer", loaded.optimizer)
            out.update(saved_policy=ldense.dtype_policy.name,
                       saved_optimizer_ok=isinstance(lopt, composed_class(EXPECTED_CLASS[c["optimizer"]])),
                       saved_momentum_scheduled=bool(getattr(lopt, "momentum_scheduled", False)))
        return out

    results = []
    for c, raw in json.loads(sys.argv[1]):
        try:
            recipe = build_recipe(raw)
            policy = keras.config.dtype_policy()
            if c["path"] == "trial":
                hypermodel = RecipeHyperModel(recipe, strategy=make_strategy("mirrored") if c["strategy"] == "mirrored" else None)
                hypermodel.trial_dir = tempfile.mkdtemp()
                hp = keras_tuner.HyperParameters()
                keras.config.set_dtype_policy(recipe.mixed_precision if recipe.mixed_precision != "off" else "float32")
                model = hypermodel.build(hp)
                history = hypermodel.fit(hp, model)
                rows = [dict(zip(history.history, v)) for v in zip(*history.history.values())]
                out = report(c, model, rows)
                keras.config.set_dtype_policy(policy)
            else:
                result = kzoo.recipes.run(recipe, out=tempfile.mkdtemp() + "/run", verbose=0)
                out = report(c, result.model, result.history, result.out_dir + "/model.keras")
                out["best_epoch"] = result.metrics.get("best_epoch")
            results.append({"combo": c, **out})
        except kzoo.UserError as e:
            results.append({"combo": c, "refused": str(e)})
        except Exception as e:
            results.append({"combo": c, "error": f"{type(e).__name__}: {str(e)[:400]}"})
    print("RESULTS " + json.dumps(results))
''')


def test_pairwise_combinations_cover_every_pair():
    combos = pairwise(FACTORS)
    names = list(FACTORS)
    for a, b in itertools.combinations(names, 2):
        for va in FACTORS[a]:
            for vb in FACTORS[b]:
                assert any(c[a] == va and c[b] == vb for c in combos), (a, va, b, vb)
    assert len(combos) <= 20


def combinations():
    """The pairwise combinations, then the ones `REFUSED` lists."""
    return pairwise(FACTORS) + [dict(zip(FACTORS, key)) for key in sorted(REFUSED)]


def run_combinations(combos, tmp_path, script=SCRIPT):
    """Trains each combination in one subprocess; returns its report per combination."""
    path = tmp_path / "combos.py"
    path.write_text(script)
    payload = json.dumps([(c, raw_recipe(c)) for c in combos])
    proc = subprocess.run([sys.executable, str(path), payload], capture_output=True, text=True,
                          timeout=480, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS ", 1)[1].splitlines()[0])
    assert len(results) == len(combos)
    return results


def check(r):
    """Fails unless combination `r["combo"]` was refused as `REFUSED` says, or trained with every
    setting carried by the model (and, for runs, the saved model)."""
    c = r["combo"]
    assert "error" not in r, r
    key = tuple(c[name] for name in FACTORS)
    if key in REFUSED:
        assert "refused" in r, f"expected a refusal at load, but it trained: {r}"
        assert "\n" not in r["refused"] and "Received:" in r["refused"], r
        return
    assert "refused" not in r, f"a combination every path honours was refused: {r}"
    assert r["optimizer_ok"], r
    assert r["nesterov"] == (c["optimizer"] == "sgd_nesterov"), r
    expected_policy = "mixed_bfloat16" if c["precision"] == "mixed_bfloat16" else "float32"
    assert r["policy"] == expected_policy, r
    assert r["mirrored"] == (c["strategy"] == "mirrored"), r
    if c["path"] != "trial":  # the saved model carries the settings
        assert r["saved_policy"] == expected_policy and r["saved_optimizer_ok"], r
        assert r["saved_momentum_scheduled"] == (c["callbacks"] == "momentum_warmup"), r
    levers = c["levers"]
    assert r["use_ema"] == (levers == "ema_best"), r
    assert r["label_smoothing"] == (0.1 if levers == "soft_labels_metrics" else 0.0), r
    assert r["class_weighted"] == (levers == "soft_labels_metrics"), r
    assert ({"top5", "macro_f1", "val_top5", "val_macro_f1"} <= set(r["columns"])) == (levers == "soft_labels_metrics"), r
    if c["path"] != "trial":  # metrics.json names the epoch whose weights the model holds
        assert (r["best_epoch"] is not None) == (levers == "ema_best"), r
    if c["callbacks"] == "momentum_warmup":
        assert "momentum" in r["columns"], r
    if c["callbacks"] == "update_ratio":
        assert "update_ratio/median" in r["columns"], r
    if c["callbacks"] == "plateau_cosine" and c["path"] != "staged":
        # cosine alone leaves 0.17 of the first epoch's rate at epoch 3; the plateau's cut after
        # epoch 2 takes a further factor of 10
        assert r["lr"][2] < 0.05 * r["lr"][0], r
    if c["callbacks"] == "early_stopping":  # stopped one epoch after the first (of the last stage)
        assert r["rows"] == (3 if c["path"] == "staged" else 2), r
    else:
        assert r["rows"] == 4, r


def test_the_recipe_refuses_exactly_the_combinations_listed_as_refused():
    """At load, which costs no training: the listed combinations are refused in one line, and
    every pairwise one loads (the slow test below trains them)."""
    from kzoo.errors import RecipeError
    from kzoo.recipes.schema import build_recipe

    for c in combinations():
        key = tuple(c[name] for name in FACTORS)
        if key in REFUSED:
            with pytest.raises(RecipeError, match="Received:") as refusal:
                build_recipe(raw_recipe(c))
            assert "\n" not in str(refusal.value)
        else:
            build_recipe(raw_recipe(c))


@pytest.mark.slow  # 30-210 s on 2 cores: over the default suite's budget; .ci/run runs it
def test_every_setting_works_on_every_path(tmp_path):
    combos = combinations()
    for r in run_combinations(combos, tmp_path):
        check(r)
