"""The augmentation levers of [data.augment]: MixUp and CutMix on the training batches (soft
labels, a function of seed, epoch and batch), and RandAugment, AugMix, random erasing and color
jitter as training-only layers in the model. RandAugment and AugMix are kzoo's, on timm's
magnitude scale, with every random choice drawn in the graph from their seed generators."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.config import is_op_determinism_enabled

from kzoo.data.core import DataSpec, open_splits
from kzoo.data.mixing import Mixing
from kzoo.data.preprocessing import augmentation_layers
from kzoo.errors import RecipeError
from kzoo.recipes.schema import build_recipe
from kzoo.runs import EpochReseed
from kzoo.train import Session
from kzoo.train.determinism import plan_step, set_op_determinism
from kzoo.train.model import augmentation
from kzoo.zoo.layers import AugMix, RandAugment

H = W = 8
CLASSES = 10


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """300 random 8x8x1 images, so that every pixel value tells which image it came from."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("levers") / "random.npz"
    x = rng.uniform(0, 16, (300, H, W, 1)).astype("float32")
    y = np.arange(300) % CLASSES
    np.savez(path, x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    return str(path)


def _splits(npz, **changes):
    return open_splits(DataSpec(npz, batch_size=16, seed=3, validation_split=0.1, **changes))


def _epoch(splits, epoch=0, epochs=None, take=-1):
    """Epoch `epoch`'s training batches (the first `take`) as numpy `(x, y)` pairs."""
    batches = splits.epochs(16, 3, epochs or epoch + 1, epoch)
    return list(batches.take(take).as_numpy_iterator())


def _partner(mixed, x, lam_of):
    """For each mixed image, `(j, residual)`: the image of the batch it was mixed with."""
    out = []
    for i in range(len(x)):
        best = min(range(len(x)), key=lambda j: np.abs(mixed[i] - lam_of(i, j)).max())
        out.append((best, float(np.abs(mixed[i] - lam_of(i, best)).max())))
    return out


def test_mixup_blends_images_and_labels_with_one_weight_per_batch(npz):
    plain, mixed = _epoch(_splits(npz), take=3), _epoch(_splits(npz, mixup=0.4), take=3)
    soft_rows = 0
    for (x, y), (xm, ym) in zip(plain, mixed):
        assert ym.dtype == np.float32 and ym.shape == (len(x), CLASSES)
        np.testing.assert_allclose(ym.sum(axis=1), 1.0, atol=1e-6)
        soft_rows += int(np.sum(ym.max(axis=1) < 0.999))
        # lam from the least-squares fit of x_mixed = lam * x_i + (1 - lam) * x_j, one per batch.
        lams = []
        for i in range(len(x)):
            fits = []
            for j in range(len(x)):
                d = (x[i] - x[j]).ravel()
                if not d.any():
                    continue
                lam = float(np.dot((xm[i] - x[j]).ravel(), d) / np.dot(d, d))
                fits.append((np.abs(xm[i] - (lam * x[i] + (1 - lam) * x[j])).max(), lam, j))
            error, lam, j = min(fits)
            if np.abs(xm[i] - x[i]).max() < 1e-5:
                continue  # paired with itself
            assert error < 1e-4 and 0 <= lam <= 1
            expected = lam * np.eye(CLASSES)[y[i]] + (1 - lam) * np.eye(CLASSES)[y[j]]
            np.testing.assert_allclose(ym[i], expected, atol=1e-5)
            lams.append(lam)
        assert lams and np.ptp(lams) < 1e-4  # one Beta draw per batch
    assert soft_rows > 12  # MixUp is on: most labels are soft


def test_cutmix_pastes_one_box_and_weighs_labels_by_its_area(npz):
    plain, mixed = _epoch(_splits(npz), take=4), _epoch(_splits(npz, cutmix=1.0), take=4)
    boxes = 0
    for (x, y), (xm, ym) in zip(plain, mixed):
        masks = [xm[i, ..., 0] != x[i, ..., 0] for i in range(len(x))]
        pasted = [m for m in masks if m.any()]
        if not pasted:
            np.testing.assert_array_equal(ym, np.eye(CLASSES)[y])  # an empty box: labels stay whole
            continue
        box = pasted[0]
        rows, cols = np.where(box)
        assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
        area = box.mean()
        for i in range(len(x)):
            if not masks[i].any():
                continue  # paired with itself
            np.testing.assert_array_equal(masks[i], box)  # the same box for the whole batch
            j = next(j for j in range(len(x)) if np.array_equal(xm[i][box], x[j][box]))
            expected = (1 - area) * np.eye(CLASSES)[y[i]] + area * np.eye(CLASSES)[y[j]]
            np.testing.assert_allclose(ym[i], expected, atol=1e-6)
        boxes += 1
    assert boxes >= 2


@pytest.mark.slow
def test_mixing_depends_on_seed_epoch_and_batch_only(npz):
    splits = _splits(npz, mixup=0.4, cutmix=1.0)
    whole = _epoch(splits, 0, epochs=3)
    resumed = _epoch(splits, 2)  # a run resumed at epoch 2
    for (x1, y1), (x2, y2) in zip(whole[28:], resumed, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(whole[0][1], whole[14][1])  # another epoch, other draws
    # With both on, some batches blend every pixel (MixUp), others paste a box (CutMix).
    plain = _epoch(_splits(npz), 0)
    kinds = set()
    for (x, _), (xm, _) in zip(plain, whole[:14]):
        changed = xm != x
        kinds.add("mixup" if changed.mean() > 0.9 else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_validation_and_test_batches_are_not_mixed(npz):
    plain, mixed = _splits(npz), _splits(npz, mixup=0.4, cutmix=1.0)
    for split in ("val", "test"):
        for (x1, y1), (x2, y2) in zip(getattr(plain, split).as_numpy_iterator(),
                                      getattr(mixed, split).as_numpy_iterator(), strict=True):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
            assert np.issubdtype(y2.dtype, np.integer) and y2.ndim == 1


@pytest.mark.slow
def test_recipe_levers_reach_every_training_path(tmp_path):
    """The recipe's mixup goes through the DataSpec to the run's splits (plain runs, tuner trials
    and the LR finder read `epochs`), survives fewer labels (staged fine-tuning), and mixes a
    multi-worker shard and a streamed folder."""
    recipe = build_recipe({"name": "t", "data": {"augment": {"mixup": 0.4}}, "model": {"name": "mlp"}})
    data = Session(recipe).data
    _, y = next(iter(data.epochs(32, 0, 1, 0)))
    assert y.shape == (32, 10) and float(tf.reduce_max(y, axis=1)[0]) <= 1.0
    assert np.sum(np.max(y.numpy(), axis=1) < 0.999) > 10

    staged = dataclasses.replace(recipe, finetune=dataclasses.replace(recipe.finetune, stages=["head:1@1e-3"],
                                                                      labels_per_class=5))
    few = Session(staged).data
    assert few.info.num_train == 50 and few.mixing == Mixing(mixup=0.4)
    _, y = next(iter(few.epochs(25, 0, 1, 0)))
    assert y.shape == (25, 10) and np.sum(np.max(y.numpy(), axis=1) < 0.999) > 5

    shard = data.worker_shard(0, 2, 0).batch(16, drop_remainder=True)
    _, y = next(iter(data.mixed(shard, 0, 0, 20, stream=0)))
    assert y.shape == (16, 10) and np.sum(np.max(y.numpy(), axis=1) < 0.999) > 5

    for c in range(2):
        (tmp_path / "photos" / str(c)).mkdir(parents=True)
        for k in range(12):
            pixels = tf.constant(np.full((8, 8, 1), 40 * c + 3 * k, "uint8"))
            (tmp_path / "photos" / str(c) / f"{k}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    streamed = open_splits(DataSpec(str(tmp_path / "photos"), batch_size=8, image_size=(8, 8), cache="none",
                                    test_split=0.25, validation_split=0.0, cutmix=1.0, mixup=1.0))
    assert type(streamed).__name__ == "StreamSplits"
    batches = list(streamed.epochs(8, 0, 2, 0).as_numpy_iterator())
    assert all(x.dtype == np.float32 for x, _ in batches)
    labels = np.concatenate([y for _, y in batches])
    assert labels.shape == (2 * streamed.info.num_train, 2)
    assert np.sum(labels.max(axis=1) < 0.999) > 5


def test_cutmix_needs_images(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, x_train=np.zeros((40, 6), "float32"), y_train=np.arange(40) % 2)
    with pytest.raises(RecipeError, match=r"cutmix .* Received: input_shape=\(6,\)"):
        open_splits(DataSpec(str(path), cutmix=1.0))
    open_splits(DataSpec(str(path), mixup=1.0))  # MixUp blends any input


# --- Training-only layers in the model ---------------------------------------------------------
LAYER_LEVERS = [({"policy": "randaugment", "policy_magnitude": 5.0}, "augment_randaugment"),
                ({"policy": "augmix", "policy_magnitude": 3.0}, "augment_augmix"),
                ({"erasing": 1.0}, "augment_erasing"),
                ({"color_jitter": 0.5}, "augment_color_jitter")]


def _recipe(augment, seed=0):
    return build_recipe({"name": "t", "seed": seed, "data": {"augment": augment},
                         "model": {"name": "mlp", "depth": 1, "width": 16}})


@pytest.fixture(scope="module")
def digits():
    session = Session(_recipe({}))
    return session, session.data.sample(32)[0]




@pytest.mark.parametrize("augment,name", LAYER_LEVERS, ids=[n for _, n in LAYER_LEVERS])
def test_recipe_layer_levers_are_training_only_layers(digits, augment, name):
    """Fast: the recipe's lever becomes its seeded, training-only layer (no model built)."""
    session, x = digits
    layers = augmentation(_recipe(augment), (H, W, 1), session.data)
    assert [lyr.name for lyr in layers] == [name]
    layer = layers[0]
    assert tuple(layer.layer.value_range) == (0.0, 16.0)  # the digits' range, before standardization
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    out = np.asarray(layer(x, training=True))
    assert np.mean(out != x) > 0.02 and out.min() >= -0.5 and out.max() <= 16.5
    again = augmentation(_recipe(augment), (H, W, 1), session.data)[0]
    np.testing.assert_array_equal(np.asarray(again(x, training=True)), out)


@pytest.mark.slow
@pytest.mark.parametrize("augment,name", LAYER_LEVERS, ids=[n for _, n in LAYER_LEVERS])
def test_layer_levers_augment_in_training_and_leave_inference_alone(digits, augment, name):
    session, x = digits
    plain = session.build(_recipe({}))
    model = session.build(_recipe(augment))
    layer = model.get_layer(name)
    assert model.layers.index(layer) < model.layers.index(model.get_layer("preprocess_standardize"))
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    out = np.asarray(layer(x, training=True))
    assert np.mean(out != x) > 0.02
    # The layer knows the digits' range (0-16): nothing is pushed far outside it.
    assert out.min() >= -0.5 and out.max() <= 16.5
    # Seeded from the recipe's seed: the same draws for the same seed, others for another.
    again = session.build(_recipe(augment)).get_layer(name)
    np.testing.assert_array_equal(np.asarray(again(x, training=True)), out)
    other = session.build(_recipe(augment, seed=1)).get_layer(name)
    assert not np.array_equal(np.asarray(other(x, training=True)), out)


@pytest.mark.slow
@pytest.mark.parametrize("augment,name", LAYER_LEVERS, ids=[n for _, n in LAYER_LEVERS])
def test_layer_levers_under_op_determinism_and_mixed_bfloat16(digits, augment, name):
    _, x = digits
    kwargs = dict(augment, value_range=(0.0, 16.0), seed=0)
    before = is_op_determinism_enabled()
    try:
        set_op_determinism(True)
        layer = augmentation_layers((H, W, 1), **kwargs)[0]
        step = tf.function(lambda t: layer(t, training=True))
        first = step(tf.constant(x)).numpy()
        assert np.mean(first != x) > 0.02
    finally:
        set_op_determinism(before)
    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        layer = augmentation_layers((H, W, 1), **kwargs)[0]
        out = layer(x, training=True)
        assert out.dtype == "bfloat16" and np.isfinite(np.asarray(tf.cast(out, tf.float32))).all()
    finally:
        keras.config.set_dtype_policy(policy)


@pytest.mark.slow
def test_policies_turn_xla_off_and_erasing_and_jitter_train_with_xla(digits):
    session, x = digits
    model = session.build(_recipe({"policy": "randaugment"}))
    plan = plan_step(model, deterministic=True, jit_compile=True, device="cpu")
    assert not plan.jit_compile and "augment_randaugment" in plan.note
    model = session.build(_recipe({"erasing": 0.5, "color_jitter": 0.4}))
    plan = plan_step(model, deterministic=True, jit_compile=True, device="cpu")
    assert plan.jit_compile
    plan.apply()  # op determinism off, as the engine does before compiling for XLA
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    assert model.jit_compile
    loss = model.train_on_batch(x, np.arange(len(x)) % 10)
    assert np.isfinite(loss)


@pytest.mark.slow
def test_models_with_layer_levers_save_load_and_export(digits, tmp_path):
    session, x = digits
    model = session.build(_recipe({"policy": "randaugment", "erasing": 0.3, "color_jitter": 0.2}))
    aug_mix = augmentation_layers((H, W, 1), policy="augmix", value_range=(0.0, 16.0))  # the API builds it
    front = keras.Sequential([keras.Input((H, W, 1)), *aug_mix, keras.layers.Flatten(), keras.layers.Dense(3)])
    for k, model in enumerate((model, front)):
        expected = model.predict(x, verbose=0)
        path = tmp_path / f"m{k}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert [lyr.name for lyr in loaded.layers] == [lyr.name for lyr in model.layers]
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)
        if k == 0:
            model.export(str(tmp_path / "export"), verbose=False)
            reloaded = tf.saved_model.load(str(tmp_path / "export"))
            served = reloaded.serve(tf.constant(x))
            np.testing.assert_allclose(np.asarray(served), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key,value,message", [
    ("mixup", -1.0, "data.augment.mixup must be >= 0 (0: off). Received: mixup=-1.0"),
    ("cutmix", -0.5, "data.augment.cutmix must be >= 0 (0: off). Received: cutmix=-0.5"),
    ("policy", "foo", "data.augment.policy must be one of none, randaugment, augmix. Received: policy='foo'"),
    ("erasing", 1.5, "data.augment.erasing must be in [0, 1]. Received: erasing=1.5"),
    ("color_jitter", -0.1, "data.augment.color_jitter must be in [0, 1]. Received: color_jitter=-0.1"),
    ("policy_magnitude", 7.0, "data.augment.policy_magnitude needs data.augment.policy"),
])
def test_bad_lever_values_are_refused_at_load(key, value, message):
    with pytest.raises(RecipeError) as error:
        _recipe({key: value})
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(RecipeError, match=r"policy_magnitude must be in \[0, 10\]"):
        _recipe({"policy": "randaugment", "policy_magnitude": 11.0})
    assert _recipe({"policy": "augmix", "policy_magnitude": 3.0}).data.augment.policy == "augmix"


def test_bad_lever_value_is_one_line_and_exit_2(cli, tmp_path):
    code, out, err = cli("run", "mlp-digits", "--set", "data.augment.mixup=-1", "--out", tmp_path / "out", "--quiet")
    assert code == 2 and err == "kzoo: error: data.augment.mixup must be >= 0 (0: off). Received: mixup=-1.0\n"
    assert not (tmp_path / "out").exists()


# --- kzoo's RandAugment and AugMix ------------------------------------------------------------
POLICIES = [("augmix", 3.0), ("randaugment", 5.0)]


def _policy_model(policy, magnitude, seed=0):
    """The recipe's training-only policy layer in a model, as `augmentation_layers` builds it."""
    layer = augmentation_layers((H, W, 1), policy=policy, policy_magnitude=magnitude, value_range=(0.0, 16.0),
                                seed=seed)[0]
    return keras.Sequential([keras.Input((H, W, 1)), layer]), layer


def _reseeded(model, epoch):
    """`model` as `kzoo.runs.EpochReseed` leaves it at the start of `epoch` (also in a resumed run)."""
    reseed = EpochReseed()
    reseed.set_model(model)
    reseed.on_train_begin()
    reseed.on_epoch_begin(epoch)
    return reseed


@pytest.mark.parametrize("policy,magnitude", POLICIES, ids=[p for p, _ in POLICIES])
def test_policy_draws_anew_at_each_compiled_step_and_replays_after_reseeding(digits, policy, magnitude):
    """Keras 3.15's AugMix picks its operations with Python's `random` when the step is traced,
    so its compiled steps would repeat them and its eager calls would not match the compiled
    ones. kzoo's draws every choice from the seed generator: a new draw at each compiled step,
    the same draws eagerly and compiled, and a resumed run (a fresh model reseeded for the
    epoch) draws what the uninterrupted run drew, under TensorFlow's op determinism."""
    _, x = digits
    before = is_op_determinism_enabled()
    try:
        set_op_determinism(True)  # the recipe's `deterministic = true`
        model, layer = _policy_model(policy, magnitude)
        step = tf.function(lambda t: layer(t, training=True))
        reseed = _reseeded(model, 1)
        compiled = [step(tf.constant(x)).numpy() for _ in range(3)]
        assert step.experimental_get_tracing_count() == 1
        for a, b in ((compiled[0], compiled[1]), (compiled[1], compiled[2])):
            changed = [not np.array_equal(a[i], b[i]) for i in range(len(x))]
            assert np.mean(changed) > 0.5  # most images get other draws at the next step
        reseed.on_epoch_begin(1)
        eager = np.array([np.asarray(layer(x, training=True)) for _ in range(3)])
        # The same draws; a last-bit difference between eager and compiled kernels may still
        # move a value across a posterization level, so a few pixels may differ.
        assert np.mean(np.abs(eager - np.array(compiled)) < 1e-3) > 0.99
        assert np.mean(np.abs(compiled[1] - compiled[0]) < 1e-3) < 0.9
        resumed, fresh = _policy_model(policy, magnitude)
        _reseeded(resumed, 1)
        again = tf.function(lambda t: fresh(t, training=True))
        np.testing.assert_array_equal(again(tf.constant(x)).numpy(), compiled[0])
        reseed.on_epoch_begin(0)
        assert not np.array_equal(step(tf.constant(x)).numpy(), compiled[0])  # another epoch, other draws
    finally:
        set_op_determinism(before)


@pytest.mark.parametrize("policy,magnitude", POLICIES, ids=[p for p, _ in POLICIES])
def test_policy_saves_and_loads_with_its_settings_and_generator_state(digits, tmp_path, policy, magnitude):
    _, x = digits
    model, layer = _policy_model(policy, magnitude)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    inner = loaded.layers[0].layer
    assert type(inner) is type(layer.layer) and inner.get_config() == layer.layer.get_config()
    assert inner.magnitude == magnitude and inner.value_range == (0.0, 16.0)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), x)  # the identity at inference
    np.testing.assert_array_equal(np.asarray(loaded.layers[0](x, training=True)), np.asarray(layer(x, training=True)))
    # Not XLA-compilable (the affine transform): the engine compiles the step without XLA.
    plan = plan_step(model, deterministic=True, jit_compile=True, device="cpu")
    assert not plan.jit_compile and f"augment_{policy}" in plan.note


def _angles(images):
    """Orientation in degrees of the bright pixels of each image (second moments), or NaN
    where nothing or most of the image is bright (an inverted or solarized image)."""
    out = []
    rows, cols = np.mgrid[:images.shape[1], :images.shape[2]]
    for image in images[..., 0]:
        weight = np.where(image > 4.0, image, 0.0)
        if not 0 < np.mean(weight > 0) < 0.3:
            out.append(np.nan)
            continue
        r, c = (np.sum(weight * t) / weight.sum() for t in (rows, cols))
        mu20, mu02 = np.sum(weight * (cols - c) ** 2), np.sum(weight * (rows - r) ** 2)
        mu11 = np.sum(weight * (cols - c) * (rows - r))
        out.append(np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02)))
    return np.array(out)


def test_randaugment_magnitude_5_rotates_by_at_most_15_degrees():
    """timm's scale: rotation up to 30 degrees at magnitude 10. Keras's RandAugment(factor=0.5),
    the former mapping of magnitude 5, rotated by up to half a turn (a 6 becomes a 9)."""
    line = np.zeros((31, 31, 1), "float32")
    line[15, 5:26] = 16.0  # a horizontal bar through the centre, on digits' 0-16 range
    layer = augmentation_layers((31, 31, 1), policy="randaugment", policy_magnitude=5.0, value_range=(0.0, 16.0),
                                seed=0)[0].layer
    assert isinstance(layer, RandAugment) and layer.num_ops == 2
    one_op = RandAugment.from_config({**layer.get_config(), "num_ops": 1, "rate": 1.0})  # one operation each
    angles = _angles(np.asarray(one_op(np.repeat(line[None], 128, axis=0), training=True)))
    angles = np.abs(angles[np.isfinite(angles)])
    assert len(angles) > 100
    assert angles.max() <= 15.5  # rotation by 15 degrees; shear_y by atan(0.15) = 8.5
    assert np.sum(angles > 14.0) >= 3  # some images were rotated, by the full 15 degrees
    strong = RandAugment.from_config({**one_op.get_config(), "magnitude": 10.0})
    angles = np.abs(_angles(np.asarray(strong(np.repeat(line[None], 128, axis=0), training=True))))
    assert 29.0 < np.nanmax(angles) <= 30.5


@pytest.mark.slow
def test_recipe_with_augmix_trains_a_cnn_on_digits_reproducibly(tmp_path):
    """`policy = "augmix"` through `kzoo.recipes.run`: a CNN on digits, one epoch, twice, with
    `deterministic = true`: the same history both times, and the saved model holds kzoo's AugMix."""
    import kzoo.recipes
    from kzoo.testing import run_without_timings

    recipe = build_recipe({"name": "augmix", "epochs": 1, "seed": 0, "deterministic": True,
                           "data": {"augment": {"policy": "augmix", "policy_magnitude": 3.0}},
                           "model": {"name": "cnn", "filters": [8], "convs_per_stage": 1, "bn_momentum": 0.9}})
    result = kzoo.recipes.run(recipe, out=str(tmp_path / "a"), verbose=0)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
    layer = result.model.get_layer("augment_augmix").layer
    assert type(layer).__name__ == "AugMix" and layer.magnitude == 3.0
    kzoo.recipes.run(recipe, out=str(tmp_path / "b"), verbose=0)
    assert run_without_timings(tmp_path / "a") == run_without_timings(tmp_path / "b")
    loaded = keras.saving.load_model(tmp_path / "a" / "model.keras")
    x = Session(recipe).data.sample(16)[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer,kwargs,message", [
    ("AugMix", {"width": 0}, "Received: width=0"),
    ("AugMix", {"alpha": 0.0}, "Received: alpha=0.0"),
    ("AugMix", {"magnitude": 11}, "Received: magnitude=11"),
    ("RandAugment", {"num_ops": 0}, "Received: num_ops=0"),
    ("RandAugment", {"value_range": (5, 1)}, "Received: value_range=(5, 1)"),
])
def test_policy_layers_check_their_arguments(layer, kwargs, message):
    with pytest.raises(ValueError) as error:
        {"AugMix": AugMix, "RandAugment": RandAugment}[layer](**kwargs)
    assert str(error.value).endswith(message)
