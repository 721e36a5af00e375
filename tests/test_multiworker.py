"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 against one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "multiworker.py"


def test_two_workers_give_the_masks_and_codebooks_of_one_process():
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", "mlp", "--examples", "1024"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, (summary, run.stderr[-3000:])
    for key in ("workers_vs_each_other", "workers_vs_one_process_two_replicas"):
        assert summary[key] == {"mask_entries_equal": 1.0, "max_codebook_difference": 0.0}, key
    assert summary["workers_vs_one_process_one_device"]["mask_entries_equal"] > 0.99
    assert abs(summary["fraction_pruned"] - 0.8) < 0.01
    assert summary["codebook_change_in_fine_tuning"] > 0  # the codebooks were trained
