"""The spec's stress tests also pass under ``nosetests`` (pynose), as ws4redis 0.5 ran them."""

import subprocess
import sys
from pathlib import Path

from tools.servers import ROOT


def test_stress_tests_pass_under_nosetests():
    nosetests = Path(sys.executable).with_name("nosetests")
    result = subprocess.run(
        [str(nosetests), "-v", "test_uwsgi_gevent.py", "test_uwsgi_threads.py"],
        cwd=ROOT / "stress-tests",
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 2 tests" in output and "OK" in output, output
