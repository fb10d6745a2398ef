"""The GPU check rehearsed on the CPU: every step runs, the results files are written."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # over the default suite's budget; see the README's slow tests
def test_gpu_check_on_the_cpu_runs_every_step_and_writes_its_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads((tmp_path / "results-gpu-check-cpu.json").read_text())
    steps = {s["step"]: s for s in payload["steps"]}
    assert set(steps) == {"devices", "mixed_precision", "xla", "xla_again", "mirrored", "resnet20", "finetune", "tune"}
    failed = {name: s["error"] for name, s in steps.items() if not s["ok"]}
    assert not failed
    assert steps["devices"]["device_kind"] == "cpu"
    assert "mixed_bfloat16" in steps["mixed_precision"]["layer_policies"]
    assert steps["xla"]["mlp"]["jit_compile"] is True
    assert all(steps["xla_again"]["identical"].values())  # two processes, the same weights
    assert steps["resnet20"]["ratio"] > 0
    assert steps["tune"]["trials"] == 2 and steps["tune"]["completed"] == 2
    md = (tmp_path / "results-gpu-check-cpu.md").read_text()
    assert "| mirrored | ok |" in md


def test_a_failing_step_is_recorded_and_the_check_goes_on(tmp_path, monkeypatch):
    from benchmarks import gpu_check

    calls = []

    def fake_group(names, cpu, tiny, workdir, timeout):
        calls.append(names)
        if "xla" in names:
            return [{"step": n, "ok": False, "seconds": 0.0, "error": "RuntimeError: no XLA here"} for n in names]
        return [{"step": n, "ok": True, "seconds": 0.0} for n in names]

    monkeypatch.setattr(gpu_check, "_run_group", fake_group)
    payload = gpu_check.run_check(cpu=False, out_dir=str(tmp_path))
    assert [c[0] for c in calls] == list(gpu_check.STEPS)  # every step tried, one process each
    by_name = {s["step"]: s for s in payload["steps"]}
    assert by_name["xla"]["error"] == "RuntimeError: no XLA here" and by_name["tune"]["ok"]
    assert "| xla | FAILED | 0.0 | RuntimeError: no XLA here |" in (tmp_path / "results-gpu.md").read_text()
