"""kzoo.callbacks: schedules and training-dynamics callbacks Keras lacks."""

from kzoo.callbacks import (
           momentum,  # noqa: F401  (registers momentum_warmup)
           schedules,
)
from kzoo.callbacks.lr_logger import LearningRateLogger
from kzoo.callbacks.registry import (
           CALLBACKS,
           RunContext,
           build_callbacks,
           list_callbacks,
           register_callback,
)

__all__ = ["CALLBACKS", "LearningRateLogger", "RunContext", "build_callbacks", "list_callbacks",
           "register_callback", "schedules"]
