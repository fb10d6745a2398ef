"""The documentation tells the truth: its figures are what their results files say, its Python
examples run, its recipes load, and the README stays a front door."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a folder of the repository, not an installed package
    sys.path.insert(0, ROOT)

FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```", re.S | re.M)
BLOCK = re.compile(r"<!-- results:(?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- /results:(?P=name) -->", re.S)
# What counts as a published figure: an accuracy-like fraction, a thousands-separated count, a
# speed, a size or a speed-up. Such numbers belong inside generated blocks.
# A Python example that cannot run offline (a download, a folder on the reader's machine) starts
# with this line and says why; every other ```python block runs.
NO_RUN = re.compile(r"^# Not run in the tests: (?P<reason>.+)$", re.M)
FIGURE = re.compile(r"\b0\.\d{3,}\b|\b\d{1,3}(?:,\d{3})+\b|\d\s?(?:samples/s|ms\b|KiB|MiB)|\d(?:\.\d+)?x (?:faster|slower)")


def pages():
    from benchmarks.results.render import pages as all_pages

    return [os.path.relpath(p, ROOT) for p in all_pages()]


def read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def fenced(page, language):
    return [m.group("body") for m in FENCE.finditer(read(page)) if m.group("info").strip() == language]


def test_readme_is_a_front_door_of_at_most_20_kb():
    readme = read("README.md")
    assert len(readme.encode()) <= 20 * 1024, f"README.md is {len(readme.encode())} bytes"
    for must in ("make run", "make test", "## Layout", "## Slow tests", "docs/performance.md"):
        assert must in readme


def test_every_page_is_in_the_site_navigation():
    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        nav = f.read()
    for page in pages():
        if page.startswith("docs/"):
            assert f": {page[len('docs/'):]}" in nav, f"{page} is missing from the nav of mkdocs.yml"


def test_generated_blocks_equal_what_their_results_files_render_to():
    from benchmarks.results import render

    stale = render.render_all(write=False)
    assert not stale, (f"generated blocks differ from their results files in {', '.join(stale)}: "
                       "run `python -m benchmarks.results --render` (after rerunning the section's command)")


def test_recipe_reference_describes_every_schema_field():
    from benchmarks.results import reference

    assert reference.missing_help() == []
    rendered = reference.render()
    for path, _ in reference.fixed_fields():
        assert f"| `{path.rsplit('.', 1)[-1]}` |" in rendered


def test_every_figure_sits_in_a_block_that_names_its_command():
    blocks = 0
    for page in pages():
        text = read(page)
        for match in BLOCK.finditer(text):
            blocks += 1
            assert re.search(r"`python -m benchmarks[^`]*`", match.group("body")), \
                f"{page}: block {match.group('name')} does not name the command that produced it"
        prose = FENCE.sub("", BLOCK.sub("", text))
        prose = re.sub(r"`[^`\n]*`", "", prose)
        figures = [m.group(0) for m in FIGURE.finditer(prose)]
        assert not figures, f"{page}: figures outside a generated block: {figures}"
        images = re.findall(r"!\[[^\]]*\]\([^)]*\)", prose)
        assert not images, f"{page}: images outside a generated block: {images}"
    assert blocks >= 10


def test_one_deterministic_run_is_published_with_one_accuracy():
    """cnn-digits, seed 0, appears in the recipe table, as the ensemble's first member and as the
    model every export starts from: the three files must agree."""
    from benchmarks import results

    recipes, ensemble, export = results.read("recipes"), results.read("ensemble"), results.read("export")
    assert recipes and ensemble and export, "run `python -m benchmarks.results recipes ensemble export`"
    cnn = next(r for r in recipes["runs"] if r["recipe"] == "cnn-digits" and not r["overrides"])
    member = ensemble["ensemble"]["members"][0]
    assert member["seed"] == cnn["seed"] == 0
    assert round(member["test_accuracy"], 4) == round(cnn["test_accuracy"], 4)
    assert all(round(f["keras_accuracy"], 4) == round(cnn["test_accuracy"], 4) for f in export["formats"])


def test_every_toml_example_is_a_valid_recipe():
    import tomllib

    from kzoo.recipes.schema import build_recipe

    checked = 0
    for page in pages():
        for body in fenced(page, "toml"):
            build_recipe(tomllib.loads(body))
            checked += 1
    assert checked >= 5


RUNNER = r"""
import contextlib, io, json, os, sys, tempfile, time, traceback
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow and Keras are imported once, before any op runs; each page then runs in a forked
# child that imports kzoo itself, so no page leans on a module an earlier page imported.
import keras, tensorflow  # noqa: E401,F401
pages = json.load(sys.stdin)
report = {}
for page, blocks in pages.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        started, out = time.process_time(), io.StringIO()
        result = {"ok": True}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                os.chdir(tmp)
                namespace = {"__name__": "__doc_example__"}
                with contextlib.redirect_stdout(out):
                    for i, code in enumerate(blocks):
                        exec(compile(code, f"{page} python block {i + 1}", "exec"), namespace)
        except BaseException:
            result = {"ok": False, "error": traceback.format_exc()}
        result.update(stdout=out.getvalue(), cpu_seconds=round(time.process_time() - started, 1))
        with os.fdopen(write, "w") as f:
            json.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    report[page] = json.loads(data) if data else {"ok": False, "error": "the example process died"}
json.dump(report, sys.stdout)
"""


@pytest.fixture(scope="module")
def example_report():
    """Runs every page's ```python blocks in one fresh process: each page in order, in its own
    namespace and temporary working folder, as a reader would paste them."""
    examples = {page: runnable(page) for page in pages()}
    examples = {page: blocks for page, blocks in examples.items() if blocks}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(examples), capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return examples, json.loads(proc.stdout)


def runnable(page):
    return [body for body in fenced(page, "python") if not NO_RUN.match(body)]


def _pages_with_examples():
    return [page for page in pages() if runnable(page)]


def test_examples_that_do_not_run_say_why_and_are_few():
    skipped = [(page, NO_RUN.match(body).group("reason")) for page in pages() for body in fenced(page, "python")
               if NO_RUN.match(body)]
    assert all(len(reason.split()) >= 3 for _, reason in skipped), skipped
    assert len(skipped) <= sum(len(fenced(page, "python")) for page in pages()) // 3, skipped


@pytest.mark.parametrize("page", _pages_with_examples())
def test_python_examples_run(example_report, page):
    examples, report = example_report
    assert report[page]["ok"], report[page]["error"]
    assert report[page]["stdout"].strip(), f"{page}: the examples printed nothing to check by eye"
