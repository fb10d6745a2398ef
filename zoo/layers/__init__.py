"""Custom Keras layers of kzoo, each registered with `register_keras_serializable(package="kzoo")`."""

from kzoo.zoo.layers.augmix import AugMix
from kzoo.zoo.layers.framing import Framing
from kzoo.zoo.layers.fused_batch_norm import FusedBatchNormalization
from kzoo.zoo.layers.maxout import Maxout
from kzoo.zoo.layers.mc_dropout import MCDropout, mc_predict
from kzoo.zoo.layers.pca_whitening import PCAWhitening
from kzoo.zoo.layers.rand_augment import RandAugment
from kzoo.zoo.layers.rrelu import RReLU
from kzoo.zoo.layers.scalar import ScalarBias, ScalarMultiplier
from kzoo.zoo.layers.stochastic_depth import StochasticDepth
from kzoo.zoo.layers.training_only import TrainingOnly

__all__ = ["AugMix", "Framing", "FusedBatchNormalization", "Maxout", "MCDropout", "PCAWhitening", "RandAugment", "RReLU", "ScalarBias", "ScalarMultiplier", "StochasticDepth",
           "TrainingOnly", "mc_predict"]
