"""The documentation tells the truth: its figures are what their results files say, its Python
examples run, its recipes load, and the README stays a front door."""

import glob
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


def _results_files():
    """Every results file a command wrote: docs/results/*.json and benchmarks/results*.json."""
    return sorted(glob.glob(os.path.join(ROOT, "docs", "results", "*.json"))
                  + glob.glob(os.path.join(ROOT, "benchmarks", "results*.json")))


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_every_results_file_names_a_commit_of_this_history():
    """Each figure can be traced to the code that measured it: its file records a commit, and
    (in a clone with history) that commit is HEAD or one of its ancestors."""
    files = _results_files()
    assert len(files) >= 8, files
    commits = {}  # file (or file: row) -> commit
    for path in files:
        name = os.path.relpath(path, ROOT)
        with open(path) as f:
            data = json.load(f)
        commits[name] = data.get("commit", "")
        for run in data.get("runs", []) if name.endswith("recipes.json") else []:  # rows keep their own
            if run["status"] == "ok":
                commits[f"{name}: {run['recipe']} {' '.join(run['overrides'])}".rstrip()] = run.get("commit", "")
        markdown = path[:-len(".json")] + ".md"
        if os.path.exists(markdown) and commits[name]:  # the table rendered beside it names it too
            assert f"at commit {commits[name][:7]}" in read(os.path.relpath(markdown, ROOT)), markdown
    missing = [name for name, commit in commits.items() if not re.fullmatch(r"[0-9a-f]{7,40}", commit or "")]
    assert not missing, f"results that name no commit (rerun their commands): {missing}"
    if _git("rev-parse", "--git-dir").returncode != 0:
        return  # a copy of the tree without its history: the commits cannot be checked against it
    foreign = [f"{name} ({commit})" for name, commit in commits.items()
               if _git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0]
    assert not foreign, f"results measured at a commit that is not HEAD or an ancestor of it: {foreign}"


def test_every_figure_block_names_the_commit_it_was_measured_at():
    measured = 0
    for page in pages():
        for match in BLOCK.finditer(read(page)):
            if match.group("name") == "recipe-fields" or match.group("body").startswith("*Not measured yet"):
                continue  # generated from the schema, or no figure yet
            measured += 1
            assert re.search(r"`python -m benchmarks[^`]*` at commit [0-9a-f]{7}\b", match.group("body")), \
                f"{page}: block {match.group('name')} does not name the commit its figures were measured at"
    assert measured >= 10


def test_provenance_records_the_commit_and_whether_the_code_changed(tmp_path, monkeypatch):
    from benchmarks import harness

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    def state():
        harness.git_state.cache_clear()
        return harness.provenance()

    monkeypatch.setattr(harness, "ROOT", str(tmp_path))
    try:
        (tmp_path / "model.py").write_text("x = 1\n")
        (tmp_path / "README.md").write_text("figures\n")
        git("init", "-q")
        git("add", ".")
        git("commit", "-q", "-m", "first")
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
        p = state()
        assert (p["commit"], p["dirty"]) == (head, False)
        assert p["cpu"] == harness.cpu_name() and isinstance(p["load_average"], float)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", p["date"])
        # What the writers produce leaves the tree clean: results files, rendered pages.
        (tmp_path / "docs" / "results").mkdir(parents=True)
        (tmp_path / "docs" / "results" / "zoo.json").write_text("{}")
        (tmp_path / "README.md").write_text("new figures\n")
        assert state()["dirty"] is False
        (tmp_path / "new_module.py").write_text("y = 2\n")  # untracked code changes what runs
        assert state()["dirty"] is True
        (tmp_path / "new_module.py").unlink()
        (tmp_path / "model.py").write_text("x = 2\n")
        assert state()["dirty"] is True
        assert harness.describe(state()) == f"at commit {head[:7]} (with uncommitted changes)"
        assert harness.provenance(load_before=1.5)["load_average"][0] == 1.5
        # A copy of the tree with no history: the commit comes from KZOO_COMMIT, dirty is unknown.
        monkeypatch.setattr(harness, "ROOT", str(tmp_path / "docs"))
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
        monkeypatch.setenv("KZOO_COMMIT", head)
        os.rename(tmp_path / ".git", tmp_path / "no-git")
        assert (state()["commit"], state()["dirty"]) == (head, None)
    finally:
        harness.git_state.cache_clear()


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
