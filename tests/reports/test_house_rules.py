"""reports/ (the diagnosis included) never imports Keras, TensorFlow, objectives or search."""

from __future__ import annotations

import subprocess
import sys


def test_reports_and_diagnosis_import_no_keras() -> None:
    code = (
        "import sys, thaw.reports, thaw.reports.diagnosis, thaw.reports._notes\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax')\n"
        "       or m.startswith(('thaw.objectives', 'thaw.search'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
