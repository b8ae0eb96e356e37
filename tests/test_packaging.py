"""Packaging: the floors CI installs, the version's one home, the metrics extra's API."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import broadcast_layer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
from lowest_constraints import floors  # noqa: E402


def test_the_oldest_run_pins_every_runtime_requirement_and_no_tooling():
    pins = floors(ROOT / "pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"django", "channels", "channels-redis", "redis"} <= set(pins)
    assert pins["channels"] == "4.2.1"  # 4.2.0 lacks require_valid_*_name
    assert pins["channels-redis"] == "4.2.1"  # 4.2.0 has no serializers module
    assert not {"pytest", "mypy", "ruff", "hypothesis"} & set(pins)
    assert not any(r.startswith("daphne") for r in project["dependencies"])
    assert "daphne" in pins  # the demo's floor is tested too


def test_the_version_is_declared_once():
    assert broadcast_layer.__version__ == importlib.metadata.version("broadcast-layer")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]


def test_the_metrics_extra_has_the_multiprocess_api(tmp_path):
    """What the metrics will use, at the floor CI installs: counters, live gauges and
    histograms shared by several worker processes through PROMETHEUS_MULTIPROC_DIR."""
    pytest.importorskip("prometheus_client")
    script = textwrap.dedent("""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client import generate_latest, multiprocess
        Counter("broadcast_layer_smoke", "a counter", ["reason"]).labels("x").inc()
        Gauge("broadcast_layer_smoke_live", "a gauge", multiprocess_mode="livesum").set(2)
        Histogram("broadcast_layer_smoke_seconds", "a histogram").observe(0.01)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = [sys.executable, "-c", script]
    outputs = [  # two processes, as two workers
        subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
        for _ in range(2)
    ]
    assert 'broadcast_layer_smoke_total{reason="x"} 2.0' in outputs[1]
    assert "broadcast_layer_smoke_live 4.0" in outputs[1]
    assert "broadcast_layer_smoke_seconds_count 2.0" in outputs[1]
