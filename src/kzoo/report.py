"""`report.html`: one self-contained page per run (recipe, metrics, evaluation and every plot),
readable in a browser with no server. Images are embedded as data URIs, so the page can be
mailed or moved without its folder."""

from __future__ import annotations

import base64
import csv
import html
import json
import os

from kzoo.runs import atomic_write

REPORT = "report.html"

# Shown first, in this order; every other PNG in the run directory follows alphabetically.
PLOT_ORDER = ("curves.png", "confusion.png", "reliability.png", "errors.png")
KEY_METRICS = ("test_accuracy", "test_loss", "best_val_accuracy", "params", "epochs_run",
               "train_seconds", "samples_per_second", "num_train", "num_val", "num_test", "seed")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1f4e79;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85}
main{padding:20px 32px;max-width:1400px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:14px 20px;margin-bottom:18px}
h2{font-size:17px;margin:4px 0 12px;color:#1f4e79}
.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{background:#eef3f9;border-radius:6px;padding:8px 14px;min-width:120px}
.tile b{display:block;font-size:20px} .tile span{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #e3e6ea}
th{background:#f0f2f5} td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f9;padding:10px;border-radius:6px;font-size:12px;overflow:auto}
.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0;flex:0 1 calc(50% - 9px);max-width:calc(50% - 9px)} figure.wide{flex-basis:100%;max-width:100%}
figure img{max-width:100%;border:1px solid #e3e6ea;border-radius:4px}
@media (max-width:900px){figure{flex-basis:100%;max-width:100%}}
figcaption{font-size:12px;color:#555}
.muted{color:#777;font-size:12px}
"""


def _fmt(value) -> str:
    if isinstance(value, float):
        if value and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _read_json(path):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _tiles(pairs) -> str:
    return '<div class="tiles">' + "".join(
        f'<div class="tile"><b>{html.escape(_fmt(v))}</b><span>{html.escape(k)}</span></div>'
        for k, v in pairs if v is not None) + "</div>"


def plots_in(run_dir: str) -> list[str]:
    """The PNG files of a run directory and of its sub-folders one level down (except
    `export/`), as relative paths in report order."""
    def pngs(folder, prefix=""):
        return sorted(prefix + f for f in os.listdir(folder)
                      if f.lower().endswith(".png") and ".tmp-" not in f and os.path.isfile(os.path.join(folder, f)))

    top = pngs(run_dir)
    nested = []
    for sub in sorted(os.listdir(run_dir)):
        folder = os.path.join(run_dir, sub)
        if os.path.isdir(folder) and not sub.startswith(".") and sub != "export":
            nested += pngs(folder, f"{sub}/")
    return [p for p in PLOT_ORDER if p in top] + [p for p in top if p not in PLOT_ORDER] + nested


def _image(run_dir, name, embed) -> str:
    if embed:
        with open(os.path.join(run_dir, name), "rb") as f:
            src = "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
    else:
        src = html.escape(name)
    wide = ' class="wide"' if name == "curves.png" else ""
    return (f'<figure{wide}><img src="{src}" alt="{html.escape(name)}" data-name="{html.escape(name)}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _eval_section(ev: dict) -> str:
    parts = [_tiles([("test accuracy", ev.get("test_accuracy")), ("test loss", ev.get("test_loss")),
                     ("expected calibration error", ev.get("ece")), ("macro F1", ev.get("macro_f1")),
                     ("test examples", ev.get("num_test"))])]
    parts.append(f'<p class="muted">dataset {html.escape(str(ev.get("dataset", "")))}, '
                 f'{ev.get("bins", "")} calibration bins</p>')
    tta = ev.get("tta")
    if tta:
        parts.append("<h2>Test-time augmentation</h2>" + _table(
            ["", "accuracy", "loss"],
            [["without", tta["accuracy_without"], tta["loss_without"]],
             [f"{tta['views']} views", tta["accuracy"], tta["loss"]]]))
    mc = ev.get("mc_dropout")
    if mc:
        parts.append("<h2>Monte-Carlo dropout</h2>" + _table(
            ["passes", "accuracy", "loss", "mean entropy", "mutual information", "entropy (right)",
             "entropy (wrong)"],
            [[mc["samples"], mc["accuracy"], mc["loss"], mc["mean_entropy"], mc["mean_mutual_information"],
              mc["entropy_correct"] if mc["entropy_correct"] is not None else "-",
              mc["entropy_wrong"] if mc["entropy_wrong"] is not None else "-"]]))
    per_class = ev.get("per_class") or []
    if per_class:
        parts.append("<h2>Per class</h2>" + _table(
            ["class", "precision", "recall", "F1", "support"],
            [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in per_class]))
    return "".join(parts)


def render_report(run_dir: str, embed: bool = True) -> str:
    """The report page of a run directory as an HTML string.

    Args:
        run_dir: a run directory; every file but the recipe is optional.
        embed: embed the PNGs as data URIs (self-contained) rather than link them relatively.
            Defaults to `True`.
    """
    metrics = _read_json(os.path.join(run_dir, "metrics.json")) or {}
    evaluation = _read_json(os.path.join(run_dir, "eval.json"))
    skip = set()
    if evaluation and _older(os.path.join(run_dir, "eval.json"), os.path.join(run_dir, "metrics.json")):
        # Left from an earlier run in this folder (--overwrite): not this model's evaluation.
        skip = set(evaluation.get("plots") or [])
        evaluation = None
    recipe_path = os.path.join(run_dir, "recipe.toml")
    recipe_text = open(recipe_path, encoding="utf-8").read() if os.path.isfile(recipe_path) else ""
    name = metrics.get("recipe") or os.path.basename(os.path.normpath(run_dir))
    subtitle = ", ".join(str(metrics[k]) for k in ("model", "dataset") if k in metrics)
    status = "" if metrics else " (unfinished: no metrics.json)"

    sections = []
    if metrics:
        tiles = [(k.replace("_", " "), metrics[k]) for k in KEY_METRICS if k in metrics]
        others = [[k, v] for k, v in sorted(metrics.items())
                  if k not in KEY_METRICS and not isinstance(v, (dict, list))]
        body = _tiles(tiles)
        if others:
            body += "<h2>Other metrics</h2>" + _table(["metric", "value"], others)
        versions = metrics.get("versions") or {}
        if versions:
            body += '<p class="muted">' + html.escape(", ".join(f"{k} {v}" for k, v in versions.items())) + "</p>"
        sections.append(f"<section><h2>Metrics</h2>{body}</section>")
    if evaluation:
        sections.append(f"<section><h2>Evaluation (kzoo eval)</h2>{_eval_section(evaluation)}</section>")
    history = os.path.join(run_dir, "history.csv")
    if os.path.isfile(history):
        with open(history, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows:
            cols = [c for c in rows[0] if rows[0][c] != ""]
            last = rows[-5:]
            sections.append("<section><h2>Last epochs</h2>" + _table(
                cols, [[_number(r.get(c, "")) for c in cols] for r in last]) + "</section>")
    plots = [p for p in plots_in(run_dir) if p not in skip] if os.path.isdir(run_dir) else []
    if plots:
        sections.append('<section><h2>Plots</h2><div class="plots">'
                        + "".join(_image(run_dir, p, embed) for p in plots) + "</div></section>")
    if recipe_text:
        sections.append(f"<section><h2>Recipe</h2><pre>{html.escape(recipe_text)}</pre></section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(name)}: kzoo report</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(name)}{status}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def _older(path: str, than: str) -> bool:
    return os.path.isfile(than) and os.path.getmtime(path) < os.path.getmtime(than)


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and abs(value) < 1e9 else value


def write_report(run_dir: str, embed: bool = True) -> str:
    """Writes `report.html` into a run directory (atomically) and returns its path.

    The runner calls it at the end of every run and `kzoo eval` after adding its plots.

    Example:
        >>> kzoo.report.write_report("runs/mlp-digits-20250101-120000")
        'runs/mlp-digits-20250101-120000/report.html'
    """
    path = os.path.join(run_dir, REPORT)
    atomic_write(path, render_report(run_dir, embed))
    return path
