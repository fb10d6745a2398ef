"""kzoo.finetune: the building blocks of staged fine-tuning.

Keras has neither staged unfreezing nor per-layer learning rates; this package adds both: a
stage plan (`parse_stages`), layer groups read from layer names (`model_structure`) and
freezing with BatchNormalization in inference mode (`freeze`). Per-group rates are an optimizer
mechanism (`kzoo.optimizers.with_group_learning_rates`); the engine (`kzoo.train`) fits a plan
of stages, and a plain run is a plan of one.
"""

from kzoo.finetune.plan import Stage, parse_stage, parse_stages
from kzoo.finetune.structure import Structure, freeze, model_structure
from kzoo.optimizers import with_group_learning_rates

__all__ = ["Stage", "Structure", "freeze", "model_structure", "parse_stage", "parse_stages",
           "with_group_learning_rates"]
