"""Shared by the benchmarks: machine description and the results files (JSON + Markdown)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One line describing the machine the numbers come from."""
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores{mem}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {framework()}"
    )


def framework() -> str:
    """TensorFlow's version, or Keras's backend, its version and its accelerator if any."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return f"TensorFlow {tf.__version__}"
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"Keras {keras.__version__} on JAX {jax.__version__} ({device.device_kind})"
    if backend == "torch":
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return f"Keras {keras.__version__} on PyTorch {torch.__version__} ({device})"
    return f"Keras {keras.__version__} on {backend}"


def goal(name: str, value: float, op: str, target: float) -> dict:
    """A goal entry with ``met`` computed from the measured value."""
    met = value <= target if op == "<=" else value >= target
    return {"name": name, "value": value, "op": op, "target": target, "met": bool(met)}


def write(name: str, goals: list[dict], rows: list[dict], markdown: str, **extra) -> Path:
    """Write ``results/NAME.json`` and ``results/NAME.md``; returns the JSON path."""
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": name,
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
        "goals": goals,
        "rows": rows,
        **extra,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    goal_lines = "\n".join(
        f"| {g['name']} | {g['value']:.4g} | {g['op']} {g['target']} | "
        f"{'met' if g['met'] else 'MISSED'} |"
        for g in goals
    )
    (RESULTS / f"{name}.md").write_text(
        f"# {name}\n\n{record['when']} on {record['machine']}\n\n`{record['command']}`\n\n"
        f"| goal | measured | target | |\n|---|---|---|---|\n{goal_lines}\n\n{markdown}\n"
    )
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``."""

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join(
        "| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows
    )
