"""`spendmeter demo`, as a new user runs it: the README's first command must work on a fresh machine."""

import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_whole_path_and_the_totals_agree() -> None:
    script = Path(sys.executable).parent / "spendmeter"
    done = subprocess.run([str(script), "demo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "receipts (8 calls" in out
    assert "duplicate, wasted $" in out and "retry" in out and "unpriced" in out
    receipt_sum, metric_sum = out.split("sum of receipt costs $")[1].split("; spendmeter_cost_usd_total $")
    assert float(receipt_sum) == float(metric_sum.split()[0]) > 0
    assert "sk-demo-not-a-real-key" not in out + done.stderr
