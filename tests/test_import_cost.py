"""``import strnn_fast`` stays light: optional heavy modules are imported only when a feature needs them."""
from __future__ import annotations

import json
import subprocess
import sys

# Each costs 0.1-0.4 s at import (scipy.integrate through torchdiffeq, pandas, networkx,
# matplotlib); the import-time budget is torch's own import + 0.2 s.
HEAVY = ("scipy", "pandas", "networkx", "matplotlib", "torchdiffeq", "onnx", "onnxruntime", "triton")


def test_import_pulls_in_no_optional_heavy_module():
    code = ("import sys, json, strnn_fast; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
    # -P: the installed package, not the source tree of the working directory
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
