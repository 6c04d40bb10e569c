"""optuna-dashboard served by `autotune dashboard` on a real study: HTTP API, then a browser."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import autotune

ARTIFACTS = Path(__file__).parents[2] / "results" / "test-artifacts"  # git-ignored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("dash")
    tuned = autotune.tune(
        tiny_model, objective="latency", trials=3, out=out, min_time_s=0.05, min_runs=3, finalists=0
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", "dashboard", "--out", str(out), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(f"{base}/api/studies")
            break
        except OSError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the dashboard did not come up"
            time.sleep(0.3)
    yield base, tuned.study_name
    proc.terminate()
    proc.wait(timeout=10)


def test_dashboard_serves_the_study_and_its_user_attributes(served) -> None:  # type: ignore[no-untyped-def]
    base, name = served
    [summary] = _get(f"{base}/api/studies")["study_summaries"]
    assert summary["study_name"] == name
    attrs = {a["key"] for a in summary["user_attrs"]}
    assert {"model_sha256", "objective", "environment"} <= attrs
    detail = _get(f"{base}/api/studies/{summary['study_id']}?after=0")
    assert len(detail["trials"]) == 3
    first = {a["key"]: a["value"] for a in detail["trials"][0]["user_attrs"]}
    assert str(first["baseline"]).lower() == "true"
    assert "latency_p50_ms" in first and "config" in first


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_dashboard_page_renders_in_a_headless_browser(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, name = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
        "--virtual-time-budget=8000",
    ]  # fmt: skip
    page = f"{base}/dashboard/studies/1/trials"  # the trial list with the first trial's details
    done = subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", page],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-500:]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    assert name in dom and "3 Trials" in dom
    assert "latency_p50_ms" in dom and "baseline" in dom  # autotune's user attributes
