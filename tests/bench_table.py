"""Run a benchmark in --quick mode and read its table: the benchmarks' smoke tests share this."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_rows(script: str) -> tuple[dict, str]:
    """``({(row, pass): (ms_a, ms_b, ratio, rel_diff)}, stdout)`` of ``script --quick``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, script, "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {(name, mode): tuple(map(float, values)) for name, mode, *values in re.findall(
        r"^(\w+)\s+(fwd|fwd\+bwd)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", proc.stdout, re.M)}
    return rows, proc.stdout
