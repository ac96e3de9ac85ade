"""The API and core import no torch, no ``models`` and no ``worker`` (DESIGN.md section 3)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import api.app, api.main, core.keys_cli, core.services.jobs, core.storage, migrations
bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'models', 'worker', 'diffusers'})
print(','.join(bad))
"""


def test_api_and_core_stay_light():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
