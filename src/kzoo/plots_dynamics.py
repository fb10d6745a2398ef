"""Training-dynamics plots: `dynamics.png` (update ratios, gradient norms) and `lr_find.png`."""

from __future__ import annotations

import math

from kzoo.plots import _pyplot, save_figure

HEALTHY = 1e-3  # the lectures' update/weight ratio
BAND = (1e-4, 1e-2)  # UpdateRatioMonitor's default warning band


def _positive(values):
    return [v if (v is not None and math.isfinite(v) and v > 0) else float("nan") for v in values]


def _series(trace, key):
    """{layer: ([steps], [values])} from a monitor trace whose samples hold `key: {layer: v}`."""
    out = {}
    for sample in trace:
        for name, v in sample[key].items():
            steps, values = out.setdefault(name, ([], []))
            steps.append(sample["step"])
            values.append(v)
    return out


def plot_dynamics(path: str, update_trace=(), grad_trace=(), activation_trace=(), lr_changes=(),
                  title: str = ""):
    """Update ratio per layer over steps (log scale, the 1e-3 band shaded), gradient norm per layer,
    and, when measured, the dead/saturated fraction per activation layer.

    Args:
        path: the PNG to write.
        update_trace: `UpdateRatioMonitor.trace`.
        grad_trace: `GradientMonitor.trace`.
        activation_trace: `ActivationMonitor.trace`.
        lr_changes: `UpdateRatioMonitor.lr_changes` (drawn as dotted lines).
    """
    plt = _pyplot()
    panels = [p for p, trace in (("update", update_trace), ("grad", grad_trace),
                                 ("act", activation_trace)) if trace]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.5, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "update":
            for name, (steps, values) in _series(update_trace, "ratios").items():
                ax.plot(steps, _positive(values), linewidth=1.2, label=name)
            ax.axhspan(*BAND, color="green", alpha=0.10, label="healthy band")
            ax.axhline(HEALTHY, color="green", linewidth=1.0, linestyle="--", label="1e-3")
            for change in lr_changes:
                ax.axvline(change["step"], color="gray", linestyle=":", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_title("Update / weight ratio per layer")
        elif panel == "grad":
            for name, (steps, values) in _series(grad_trace, "norms").items():
                ax.plot(steps, _positive(values), "-o", markersize=2.5, linewidth=1.2, label=name)
            ax.set_yscale("log")
            ax.set_title("Gradient norm per layer (probe batch)")
        else:
            series = {}
            for sample in activation_trace:
                for name, s in sample["stats"].items():
                    key = "dead" if "dead" in s else "saturated" if "saturated" in s else None
                    if key:
                        steps, values = series.setdefault(f"{name} ({key})", ([], []))
                        steps.append(sample["step"])
                        values.append(s[key])
            for name, (steps, values) in series.items():
                ax.plot(steps, values, "-o", markersize=2.5, linewidth=1.2, label=name)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title("Dead ReLU / saturated fraction")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return True


def write_dynamics_plot(callbacks, path: str, title: str = "") -> bool:
    """Draws `dynamics.png` from whichever monitors are among `callbacks`; False if none sampled."""
    update = grad = act = ()
    changes = ()
    for cb in callbacks:
        name = type(cb).__name__
        trace = getattr(cb, "trace", None)
        if not trace:
            continue
        if name == "UpdateRatioMonitor":
            update, changes = trace, getattr(cb, "lr_changes", ())
        elif name == "GradientMonitor":
            grad = trace
        elif name == "ActivationMonitor":
            act = trace
    return plot_dynamics(path, update, grad, act, changes, title=title)


def plot_lr_find(result, path: str, title: str = ""):
    """The range test: raw and smoothed loss against the learning rate, the suggestion marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=1.8, label="smoothed")
    if math.isfinite(result.suggestion):
        ax.axvline(result.suggestion, color="tab:red", linestyle="--",
                   label=f"suggestion {result.suggestion:.2e}")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        # the interesting part is the descent: clip the final blow-up at twice the starting loss
        raw = [v for v in result.losses if math.isfinite(v)]
        low, high = min(finite + raw[: len(finite)]), min(max(finite), 2 * finite[0])
        pad = 0.05 * (high - low) + 1e-9
        ax.set_ylim(low - pad, high + pad)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title or "Learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path)
