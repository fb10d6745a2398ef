"""One composition for every optimizer kzoo builds, registered so a saved model carries it:
`KzooAdam` is `GroupLearningRates + UpdateRatioStatistics + Beta1Momentum + keras.optimizers.Adam`,
and so on. With no multipliers, no schedule and no watch it updates exactly as the Keras class does."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from kzoo.optimizers.gains import AdaptiveGainSGD


class GroupLearningRates:
    """Mixin over a Keras optimizer: each step runs the optimizer's own update once per group of
    variables at `learning_rate * factor`, so the factor scales the update itself (Adam's too).
    Weight decay is applied at the base rate to every group.

    Args:
        lr_multipliers: layer name -> factor of the learning rate (>= 0), saved in the config;
            layers not named learn at the base rate. Defaults to `None`.

    Reference: discriminative fine-tuning (Howard & Ruder 2018, https://arxiv.org/abs/1801.06146).
    """

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        multipliers = dict(lr_multipliers or {})
        for key, value in multipliers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"lr_multipliers values must be numbers >= 0. Received: {key}={value!r}")
        self.lr_multipliers = {str(k): float(v) for k, v in multipliers.items()}

    def multiplier(self, variable) -> float:
        """The factor for `variable`: the multiplier of the innermost layer in its path, or 1."""
        for part in reversed(variable.path.split("/")[:-1]):
            if part in self.lr_multipliers:
                return self.lr_multipliers[part]
        return 1.0

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self.lr_multipliers:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        groups: dict[float, tuple[list, list]] = {}
        for grad, variable in zip(grads, trainable_variables):
            g, v = groups.setdefault(self.multiplier(variable), ([], []))
            g.append(grad)
            v.append(variable)
        for factor, (g, v) in groups.items():
            super()._backend_update_step(g, v, learning_rate if factor == 1.0 else learning_rate * factor)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


class UpdateRatioWatch:
    """What `UpdateRatioStatistics` measures inside the compiled step, in variables the step writes
    and a callback reads at execution boundaries (`kzoo.callbacks.UpdateRatioMonitor`).

    Every `every_n_steps`-th call of `apply` (counted by `step`) copies the watched variables
    before the update and, after it, writes each group's `||W_after - W_before||` and
    `||W_before||` (float64) into slot `count % capacity` of `values`, its step into `steps`,
    and adds one to `count`; the reader takes the `count` newest samples and sets it back to 0.
    The variables are no part of the optimizer's state: a saved model never holds them.

    Args:
        groups: lists of variables, one per layer.
        every_n_steps: steps between samples.
        capacity: samples kept between two reads.
    """

    def __init__(self, groups, every_n_steps: int, capacity: int):
        self.groups = [list(g) for g in groups]
        self.every_n_steps = int(every_n_steps)
        self.capacity = int(capacity)
        self.key = tuple(id(v) for g in self.groups for v in g)
        self.train_function = None  # the model's train function traced with this watch (set by its reader)
        # Replica-local (ON_READ) under a strategy: every replica computes the same numbers from its
        # copy of the weights, and writes them without a cross-replica merge inside the step.
        local = dict(synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, trainable=False)
        self.shadows = [[tf.Variable(tf.zeros(v.shape, v.dtype), **local) for v in g] for g in self.groups]
        self.step = tf.Variable(tf.constant(0, tf.int64), **local)
        self.active = tf.Variable(False, **local)
        self.count = tf.Variable(tf.constant(0, tf.int64), **local)
        self.values = tf.Variable(tf.zeros((self.capacity, len(self.groups), 2), tf.float64), **local)
        self.steps = tf.Variable(tf.zeros((self.capacity,), tf.int64), **local)

    def fits(self, groups, every_n_steps: int, capacity: int) -> bool:
        """Whether this watch measures `groups` every `every_n_steps` with room for `capacity`."""
        return (self.key == tuple(id(v) for g in groups for v in g) and self.every_n_steps == int(every_n_steps)
                and self.capacity >= int(capacity))

    def begin(self):
        """Before the update: whether this step is sampled (a boolean tensor); copies the weights if so."""
        step = self.step.read_value()
        sampled = tf.logical_and(self.active.read_value(), tf.equal(step % self.every_n_steps, 0))

        def snapshot():
            for shadows, variables in zip(self.shadows, self.groups):
                for s, v in zip(shadows, variables):
                    s.assign(v.value)
            return tf.constant(True)

        tf.cond(sampled, snapshot, lambda: tf.constant(False))
        return sampled, step

    def end(self, sampled, step):
        """After the update: writes the sample if `sampled`; counts the step."""

        def measure():
            rows = []
            for shadows, variables in zip(self.shadows, self.groups):
                # float64: the ratio stays exact to 1e-5 even for small updates of big weights
                old = [tf.cast(s.read_value(), tf.float64) for s in shadows]
                new = [tf.cast(v.value, tf.float64) for v in variables]
                num = tf.add_n([tf.reduce_sum(tf.square(a - b)) for a, b in zip(new, old)])
                den = tf.add_n([tf.reduce_sum(tf.square(b)) for b in old])
                rows.append(tf.sqrt(tf.stack([num, den])))
            slot = self.count.read_value() % self.capacity
            self.values.assign(tf.tensor_scatter_nd_update(self.values.read_value(), [[slot]], [tf.stack(rows)]))
            self.steps.assign(tf.tensor_scatter_nd_update(self.steps.read_value(), [[slot]], [step]))
            self.count.assign_add(1)
            return tf.constant(True)

        tf.cond(sampled, measure, lambda: tf.constant(False))
        self.step.assign_add(1)

    def read(self):
        """`(steps, values)` of the samples since the last read, oldest first (numpy); resets the count."""
        count = int(self.count.numpy())
        if not count:
            return [], []
        self.count.assign(0)
        n = min(count, self.capacity)
        slots = [(count - n + i) % self.capacity for i in range(n)]
        steps, values = self.steps.numpy(), self.values.numpy()
        return [int(steps[i]) for i in slots], [values[i] for i in slots]


class UpdateRatioStatistics:
    """Mixin measuring the update-to-weight ratio of watched groups of variables inside the
    compiled train step, on sampled steps only (`UpdateRatioWatch`), so a monitor needs no
    per-step hook and training keeps several steps per call. Unwatched, `apply` is the parent's.

    Reference: Karpathy, CS231n "Neural Networks Part 3" (https://cs231n.github.io/neural-networks-3/#ratio).
    """

    update_watch = None

    def watch_update_ratios(self, watch):
        """Measures with `watch` (an `UpdateRatioWatch`) from the next trace of the train step on;
        `None` stops. Kept outside the optimizer's tracked state."""
        object.__setattr__(self, "update_watch", watch)

    def apply(self, grads, trainable_variables=None):
        watch = self.update_watch
        if watch is None:
            return super().apply(grads, trainable_variables)
        sampled, step = watch.begin()
        result = super().apply(grads, trainable_variables)
        watch.end(sampled, step)
        return result


class ScheduledMomentum:
    """Mixin holding an optimizer's `momentum` (or `beta_1`: `momentum_attr`) in a variable on request.

    Keras keeps them as Python floats, which a compiled train step captures as constants. Once a
    callback asks for a schedule (`enable_momentum_schedule`) the value lives in a scalar
    optimizer variable the step reads; the attribute keeps the last value set, for `get_config`.
    An optimizer nobody schedules keeps Keras's update bit for bit.

    Reference: Sutskever et al. 2013 (https://proceedings.mlr.press/v28/sutskever13.html).
    """

    momentum_attr = "momentum"
    momentum_variable = None
    momentum_scheduled = False

    def __init__(self, *args, momentum_scheduled=False, **kwargs):
        super().__init__(*args, **kwargs)
        if momentum_scheduled:  # a saved optimizer that had a schedule gets its variable back
            object.__setattr__(self, "momentum_scheduled", True)

    def get_config(self):
        config = super().get_config()
        if self.momentum_scheduled:
            config["momentum_scheduled"] = True
        return config

    def enable_momentum_schedule(self):
        """Makes the momentum settable during training; call before the train step is traced
        (a callback's `set_model`), or reset `model.train_function` after."""
        if not self.momentum_scheduled:
            object.__setattr__(self, "momentum_scheduled", True)
            if self.built:
                self._add_momentum_state(self._trainable_variables)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if self.momentum_scheduled:
            self._add_momentum_state(variables)

    def _add_buffers(self, variables):
        """Creates the velocity a schedule needs where the optimizer was built without one."""

    def _add_momentum_state(self, variables):
        self._add_buffers(variables)
        if self.momentum_variable is None:
            value = float(getattr(self, self.momentum_attr))
            self.momentum_variable = self.add_variable(
                shape=(), initializer=keras.initializers.Constant(value), dtype="float32",
                name=self.momentum_attr)

    def set_momentum(self, value: float):
        """Sets the hyperparameter used from the next update step on."""
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{self.momentum_attr} must be in [0, 1). Received: {self.momentum_attr}={value}")
        setattr(self, self.momentum_attr, value)
        if self.momentum_variable is not None:
            self.momentum_variable.assign(value)

    def get_momentum(self) -> float:
        if self.momentum_variable is None:
            return float(getattr(self, self.momentum_attr))
        return float(ops.convert_to_numpy(self.momentum_variable))

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum_variable is None:
            return super().update_step(gradient, variable, learning_rate)
        # The parent's step reads the attribute with ops.cast / arithmetic: give it the variable
        # while the step is traced, so the graph reads the variable instead of a constant.
        name = self.momentum_attr
        value = getattr(self, name)
        object.__setattr__(self, name, self.momentum_variable)
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            object.__setattr__(self, name, value)


class SGDMomentumStep(ScheduledMomentum):
    """SGD's update with a scheduled momentum: SGD's own step branches on `momentum != 0` in
    Python, which a variable cannot answer inside a graph; the same update, always with the
    velocity buffer (created even when the initial momentum is 0, so a warm-up may start at 0)."""

    def _add_buffers(self, variables):
        if not self.momentums:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum_variable is None:
            return keras.optimizers.SGD.update_step(self, gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        self.assign(m, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
        else:
            self.assign_add(variable, m)


class RMSpropMomentum(ScheduledMomentum):
    """RMSprop creates its velocity only with a non-zero momentum; a schedule needs one."""

    def _add_buffers(self, variables):
        if not self.momentum:
            raise ValueError(f"{type(self).__name__} cannot schedule a momentum it was built without. "
                             "Received: momentum=0")


class GainsMomentum(ScheduledMomentum):
    """`AdaptiveGainSGD`'s velocity, created for a schedule even at momentum 0."""

    def _add_buffers(self, variables):
        if not self.velocities:
            self.velocities = self.add_optimizer_variables(variables, "velocity")


class Beta1Momentum(ScheduledMomentum):
    """The Adam family: `beta_1` plays the momentum's part (the bias correction then uses the
    current value, exact for a constant one)."""

    momentum_attr = "beta_1"


# Most specific first: AdamW is an Adam subclass. Adagrad has no momentum to schedule.
_MOMENTUM = [
    (keras.optimizers.SGD, SGDMomentumStep),
    (keras.optimizers.RMSprop, RMSpropMomentum),
    (keras.optimizers.AdamW, Beta1Momentum),
    (keras.optimizers.Adam, Beta1Momentum),
    (keras.optimizers.Adamax, Beta1Momentum),
    (keras.optimizers.Nadam, Beta1Momentum),
    (AdaptiveGainSGD, GainsMomentum),
    (keras.optimizers.Adagrad, None),
]


def _compose(base, momentum):
    mixins = (GroupLearningRates, UpdateRatioStatistics) + ((momentum,) if momentum else ()) + (base,)
    doc = (f"`{base.__module__.split('.src')[0]}.{base.__name__}` with per-layer learning-rate multipliers "
           "(`lr_multipliers`)" + (" and a momentum a callback may schedule." if momentum else "."))
    cls = type(f"Kzoo{base.__name__}", mixins, {"__module__": __name__, "__doc__": doc})
    return keras.saving.register_keras_serializable(package="kzoo")(cls)


_COMPOSED = {base: _compose(base, momentum) for base, momentum in _MOMENTUM}
globals().update({cls.__name__: cls for cls in _COMPOSED.values()})


def composed_class(optimizer_or_class):
    """The kzoo class for a Keras optimizer (instance or class); a kzoo class maps to itself."""
    cls = optimizer_or_class if isinstance(optimizer_or_class, type) else type(optimizer_or_class)
    if cls in _COMPOSED.values():
        return cls
    if cls not in _COMPOSED:
        names = ", ".join(b.__name__ for b in _COMPOSED)
        raise ValueError(f"kzoo composes {names}. Received: optimizer={cls.__name__}")
    return _COMPOSED[cls]


def with_group_learning_rates(optimizer, lr_multipliers: dict):
    """A copy of a Keras or kzoo optimizer whose updates are scaled per layer (`lr_multipliers`:
    layer name -> factor), e.g. `with_group_learning_rates(keras.optimizers.Adam(), {"stem": 0.1})`."""
    config = optimizer.get_config()
    config.pop("lr_multipliers", None)
    lr = optimizer._learning_rate  # keeps a schedule object rather than its serialized form
    config["learning_rate"] = lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else float(
        keras.ops.convert_to_numpy(lr))
    return composed_class(optimizer)(lr_multipliers=lr_multipliers, **config)


def scheduled_optimizer(optimizer):
    """Turns a stock Keras optimizer, built or not, into its kzoo class in place, with its
    momentum scheduled; its state (iterations, buffers) is kept. Returns the optimizer; raises
    `ValueError` for an optimizer without a momentum-like hyperparameter."""
    if not isinstance(optimizer, ScheduledMomentum):
        cls = composed_class(optimizer)
        if not issubclass(cls, ScheduledMomentum):
            raise ValueError("Momentum scheduling needs SGD, RMSprop, Adam, AdamW, Adamax, Nadam or gains. "
                             f"Received: optimizer={type(optimizer).__name__}")
        optimizer.__class__ = cls
        optimizer.lr_multipliers = {}
    if isinstance(optimizer, RMSpropMomentum) and not optimizer.momentum:
        raise ValueError("RMSprop with momentum 0 has no velocity to schedule. Received: momentum=0.0")
    optimizer.enable_momentum_schedule()
    return optimizer


def watched_optimizer(model):
    """The model's optimizer (inside a `LossScaleOptimizer`) as a kzoo class that can watch update
    ratios (`UpdateRatioStatistics`): a stock Keras optimizer is turned into its kzoo class in place,
    its state kept. Raises `TypeError` for an optimizer kzoo does not compose."""
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if not isinstance(inner, UpdateRatioStatistics):
        try:
            cls = composed_class(inner)
        except ValueError as e:
            raise TypeError(f"Update ratios are measured inside kzoo's optimizers; {e}") from None
        inner.__class__ = cls
        inner.lr_multipliers = {}
    return inner


def schedule_momentum(model):
    """The model's optimizer (inside a `LossScaleOptimizer`) made schedulable by
    `scheduled_optimizer`; a train step traced before is dropped, as it reads the old constant."""
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if getattr(inner, "momentum_variable", None) is None:
        scheduled_optimizer(inner)
        model.train_function = None
    return inner
