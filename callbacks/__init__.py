"""kzoo.callbacks: schedules and training-dynamics callbacks Keras lacks."""

from kzoo.callbacks import (
    momentum,  # noqa: F401  (registers momentum_warmup)
    schedules,
)
from kzoo.callbacks.activations import ActivationMonitor
from kzoo.callbacks.divergence import DivergenceGuard
from kzoo.callbacks.early_stopping import EarlyStopping
from kzoo.callbacks.gradients import GradientMonitor
from kzoo.callbacks.lr_control import ScheduleMomentum, learning_rate_at, scale_learning_rate
from kzoo.callbacks.lr_finder import LRFindResult, lr_find
from kzoo.callbacks.lr_logger import LearningRateLogger
from kzoo.callbacks.plateau import ReduceLROnPlateau
from kzoo.callbacks.registry import (
    CALLBACKS,
    RunContext,
    build_callbacks,
    list_callbacks,
    register_callback,
)
from kzoo.callbacks.resumable import ResumableCallback
from kzoo.callbacks.update_ratio import UpdateRatioMonitor

__all__ = ["ActivationMonitor", "CALLBACKS", "DivergenceGuard", "EarlyStopping", "GradientMonitor",
           "LRFindResult", "LearningRateLogger", "ReduceLROnPlateau", "ResumableCallback", "RunContext",
           "ScheduleMomentum", "UpdateRatioMonitor", "build_callbacks", "learning_rate_at", "list_callbacks",
           "lr_find", "register_callback", "scale_learning_rate", "schedules"]
