"""report.html: written by every run and by `kzoo eval`, self-contained, readable in a browser."""

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

from kzoo.report import plots_in, render_report, write_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run whose description holds markup that the report must escape."""
    from kzoo.recipes import load, run

    recipe = load("mlp-digits", {"epochs": 2, "model.depth": 1, "model.width": 16,
                                 "description": "<script>alert('x')</script> & more"})
    return run(recipe, out=str(tmp_path_factory.mktemp("report") / "run"), verbose=0).out_dir


def _embedded(page: str) -> dict:
    """{data-name: decoded bytes} of every embedded image."""
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" data-name="([^"]+)"', page)
    return {name: base64.b64decode(data) for data, name in found}


def test_every_run_writes_a_report_with_recipe_metrics_and_plots(run_dir):
    with open(os.path.join(run_dir, "report.html"), encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert f"{metrics['test_accuracy']:.4f}" in page
    assert "mlp-digits" in page and "width = 16" in page  # the recipe, as run
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    with open(os.path.join(run_dir, "curves.png"), "rb") as f:
        assert _embedded(page) == {"curves.png": f.read()}


def test_report_embeds_every_png_of_the_run_dir_and_can_link_instead(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "dynamics").mkdir()
    (copy / "export").mkdir()
    for name in ("zz_dynamics.png", "confusion.png", "dynamics/layer0.png", "export/not-a-plot.png"):
        shutil.copy(copy / "curves.png", copy / name)
    write_report(str(copy))
    page = (copy / "report.html").read_text(encoding="utf-8")
    expected = ["curves.png", "confusion.png", "zz_dynamics.png", "dynamics/layer0.png"]
    assert list(_embedded(page)) == expected == plots_in(str(copy))
    linked = render_report(str(copy), embed=False)
    assert 'src="zz_dynamics.png"' in linked and "base64" not in linked


def test_report_leaves_out_the_evaluation_of_an_earlier_run_in_the_same_folder(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.copy(copy / "curves.png", copy / "confusion.png")
    (copy / "eval.json").write_text(json.dumps({"test_accuracy": 0.5, "plots": ["confusion.png"]}))
    os.utime(copy / "eval.json", (1, 1))  # written before this run's metrics.json
    page = render_report(str(copy))
    assert "Evaluation (kzoo eval)" not in page and list(_embedded(page)) == ["curves.png"]
    os.utime(copy / "eval.json")  # now newer: this run's evaluation
    page = render_report(str(copy))
    assert "Evaluation (kzoo eval)" in page and list(_embedded(page)) == ["curves.png", "confusion.png"]


def test_report_of_an_unfinished_run_says_so(tmp_path):
    (tmp_path / "recipe.toml").write_text('name = "half"\n')
    page = render_report(str(tmp_path))
    assert "unfinished" in page and "name = &quot;half&quot;" in page


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="needs chromium (apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium_with_every_image_loaded(run_dir, tmp_path, cli):
    assert CHROMIUM, "CI must render the report: .ci/run installs Debian's chromium"
    code, _, err = cli("eval", run_dir)  # adds confusion, reliability, errors and the eval section
    assert code == 0, err
    page = (open(os.path.join(run_dir, "report.html"), encoding="utf-8").read())
    probe = ("<script>window.addEventListener('load', () => { const s = [...document.images].map("
             "i => i.dataset.name + ':' + (i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0));"
             "const p = document.createElement('pre'); p.id = 'probe'; p.textContent = s.join(' ');"
             "document.body.appendChild(p); });</script>")
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">([^<]*)</pre>', done.stdout)
    assert found, done.stdout[-2000:]
    widths = dict(item.rsplit(":", 1) for item in found.group(1).split())
    assert sorted(widths) == sorted(plots_in(run_dir)) == sorted(
        ["curves.png", "confusion.png", "errors.png", "reliability.png"])
    assert all(int(w) > 100 for w in widths.values()), widths
    assert "Evaluation (kzoo eval)" in done.stdout and "Per class" in done.stdout
