"""Every custom layer, every registered activation and every registered initializer is a good
Keras citizen: config and serialization round trips, fit, mixed precision, .keras save/load,
a float64 gradient check, and (in one fresh process) identical outputs after loading and
training under MirroredStrategy. A new block is covered by adding one line to CASES."""

import keras
import pytest

from kzoo.testing import check_conformance, check_in_fresh_process, conformance_case
from kzoo.zoo import activations, initializers
from kzoo.zoo.backbones import BackbonePreprocess
from kzoo.zoo.layers import (
    AugMix,
    Framing,
    FusedBatchNormalization,
    Maxout,
    MCDropout,
    PCAWhitening,
    RandAugment,
    RReLU,
    ScalarBias,
    ScalarMultiplier,
    StochasticDepth,
    TrainingOnly,
)
from kzoo.zoo.resnet import PadShortcut


def _initializer_case(name):
    import keras

    return conformance_case(
        f"init_{name}",
        lambda: keras.layers.Dense(4, kernel_initializer=initializers.get(name, seed=0), name=f"init_{name}"),
        (6,), gradient=False, fit=False)  # a Keras Dense: config and save/load are what matter


LAYER_CASES = [
    # TensorFlow's bilinear resize computes in float32 whatever its input, so the float64
    # gradient check runs on the scale-and-pad case only.
    conformance_case("framing", lambda: Framing(scale=2.0, resize=[5, 6], pad=1), (3, 4, 2), gradient=False),
    conformance_case("framing_pad", lambda: Framing(scale=2.0, pad=1), (3, 4, 2)),
    conformance_case("fused_batch_norm", lambda: FusedBatchNormalization(momentum=0.9), (3, 3, 4)),
    conformance_case("maxout", lambda: Maxout(num_pieces=3), (6,)),
    conformance_case("maxout_conv", lambda: Maxout(num_pieces=2), (3, 3, 4)),
    conformance_case("rrelu", lambda: RReLU(lower=0.1, upper=0.3, seed=1), (6,), training_gradient=True),
    conformance_case("mc_dropout", lambda: MCDropout(0.3, seed=1), (6,), training_gradient=True),
    conformance_case("stochastic_depth", lambda: StochasticDepth(0.5, seed=1), [(6,), (6,)], training_gradient=True),
    conformance_case("pca_whitening", lambda: PCAWhitening(epsilon=0.1), (6,), adapt=lambda layer, x: layer.adapt(x)),
    conformance_case("backbone_preprocess", lambda: BackbonePreprocess("torch", 2.0), (4, 4, 1)),
    conformance_case("scalar_bias", lambda: ScalarBias(0.5, lr_multiplier=0.1), (6,)),
    conformance_case("scalar_multiplier", lambda: ScalarMultiplier(1.5, lr_multiplier=0.1), (6,)),
    conformance_case("pad_shortcut", lambda: PadShortcut(4, 2), (4, 4, 2)),
    conformance_case("training_only", lambda: TrainingOnly(keras.layers.GaussianNoise(0.1, seed=1)), (6,)),
    # Random image operations in training, the identity otherwise: no gradient to check.
    conformance_case("augmix", lambda: AugMix((-3.0, 3.0), magnitude=3.0, seed=1), (6, 6, 1), gradient=False),
    conformance_case("rand_augment", lambda: RandAugment((-3.0, 3.0), magnitude=5.0, seed=1), (6, 6, 3), gradient=False),
]
ACTIVATION_CASES = [
    conformance_case(f"act_{name}", (lambda n=name: activations.get(n, name=f"act_{n}")), (6,),
                     training_gradient=name == "rrelu")
    for name in activations.list_activations()
]
INITIALIZER_CASES = [_initializer_case(name) for name in initializers.list_initializers()]
CASES = LAYER_CASES + ACTIVATION_CASES + INITIALIZER_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_conformance(case, tmp_path):
    check_conformance(case, tmp_path)


def test_every_registered_activation_and_initializer_is_covered():
    names = {c.name for c in CASES}
    assert {f"act_{n}" for n in activations.list_activations()} <= names
    assert {f"init_{n}" for n in initializers.list_initializers()} <= names
    assert {"act_maxout", "act_rrelu", "init_lsuv"} <= names


def test_every_kzoo_layer_class_has_a_case():
    """A layer registered under package "kzoo" anywhere in the package needs a line in LAYER_CASES."""
    import keras

    import kzoo  # noqa: F401  (imports every subpackage that registers classes)

    registered = {cls for key, cls in keras.saving.get_custom_objects().items()
                  if key.startswith("kzoo>") and isinstance(cls, type)
                  and issubclass(cls, keras.layers.Layer) and not issubclass(cls, keras.Model)}
    covered = {type(case.make()) for case in LAYER_CASES}
    assert registered - covered == set(), "add a conformance_case line for each of these"


def test_fresh_process_load_and_mirrored_strategy(tmp_path):
    # Custom layers only (the Keras ones are Keras's business) plus the two custom activations.
    cases = LAYER_CASES + [c for c in ACTIVATION_CASES if c.name in ("act_maxout", "act_rrelu")]
    report = check_in_fresh_process(cases, tmp_path, mirrored=True)
    assert report["max_abs_diff"] == 0.0
    assert report["replicas"] == 2
    assert report["finite"]


# A layer with the bug the save/load check exists for: `scale` is a constructor argument that
# `get_config` forgets, so every reloaded copy is built with the default and agrees with every
# other reloaded copy, but not with the model that was saved.
@keras.saving.register_keras_serializable(package="kzoo_tests")
class ForgetfulScale(keras.layers.Layer):
    def __init__(self, scale=1.0, forget=True, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.forget = forget

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        config = super().get_config()
        return config if self.forget else {**config, "scale": self.scale, "forget": False}


def test_conformance_fails_a_layer_whose_config_drops_an_argument(tmp_path):
    buggy = conformance_case("forgetful", lambda: ForgetfulScale(3.0), (6,))
    with pytest.raises(AssertionError, match="forgetful: outputs differ after loading"):
        check_conformance(buggy, tmp_path)
    # The same layer with a complete config passes: the failure is the dropped argument.
    fixed = conformance_case("complete", lambda: ForgetfulScale(3.0, forget=False), (6,))
    check_conformance(fixed, tmp_path)


def test_fresh_process_check_compares_with_the_saved_model(tmp_path, monkeypatch):
    from kzoo.zoo.layers import RReLU

    # Only this process's RReLU forgets its bounds: the file holds the defaults, so the fresh
    # process rebuilds a layer with another inference slope than the one that was saved.
    monkeypatch.setattr(RReLU, "get_config", lambda self: keras.layers.Layer.get_config(self))
    case = conformance_case("rrelu", lambda: RReLU(lower=0.0, upper=0.1), (6,))
    with pytest.raises(AssertionError, match="outputs differ in a fresh process"):
        check_in_fresh_process([case], tmp_path, mirrored=False)
