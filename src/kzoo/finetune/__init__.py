"""kzoo.finetune: staged fine-tuning of zoo models and pretrained backbones.

Keras has neither staged unfreezing nor per-layer learning rates; this package adds both:
a stage plan (`parse_stages`), layer groups read from layer names (`model_structure`), freezing
with BatchNormalization in inference mode (`freeze`), optimizers with per-group rates saved
with the model (`with_group_learning_rates`), and the staged runner behind `kzoo run` and
`kzoo finetune` (`run_staged`).
"""

from kzoo.finetune.optimizer import with_group_learning_rates
from kzoo.finetune.plan import Stage, parse_stage, parse_stages
from kzoo.finetune.staged import build_finetune_model, fit_stages, replace_head, run_staged
from kzoo.finetune.structure import Structure, freeze, model_structure

__all__ = ["Stage", "Structure", "build_finetune_model", "fit_stages", "freeze", "model_structure",
           "parse_stage", "parse_stages", "replace_head", "run_staged", "with_group_learning_rates"]
