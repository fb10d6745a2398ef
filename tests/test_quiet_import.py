"""TensorFlow's start-up notices stay off the user's terminal; everything else reaches it."""

import os
import subprocess
import sys


def test_importing_kzoo_prints_nothing_to_stderr():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", "import kzoo"], capture_output=True, text=True, env=env)
    assert done.returncode == 0
    assert done.stderr == ""


def test_only_the_notices_are_dropped(tmp_path, monkeypatch, capfd):
    from kzoo.quiet_import import quiet_import

    (tmp_path / "noisy_module.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'I0000 00:00:1.5 1 port.cc:153] oneDNN custom operations are on. You may see...\\n')\n"
        "os.write(2, b'E0000 00:00:1.5 1 cuda.cc:1] a real error\\n')\n"
        "VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert quiet_import("noisy_module").VALUE == 3
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1.5 1 cuda.cc:1] a real error\n"
