"""`import elax` is light; submodules load on first use."""

import subprocess
import sys


def test_import_elax_is_lazy_and_submodules_resolve():
    code = ("import sys, elax; assert 'jax' not in sys.modules, 'import elax pulled in jax'; "
            "import elax.models; print(elax.transfer.plan.__name__, elax.runs.run_baseline.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plan", "run_baseline"]
