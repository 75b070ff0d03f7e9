"""--ray-address HOST:PORT: the same command joins a running cluster (`ray start --head`) instead of
starting one, with results identical to the local backend."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import evalkit

RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` CLI of this interpreter, whatever PATH holds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A one-node Ray cluster started the way a user starts one, with token auth (Ray's default).

    `ray start --block` stays in the foreground, so ending it stops this cluster's processes only
    (`ray stop` would stop every Ray instance on the machine)."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen([*RAY, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None, head.stderr.read()[-2000:]
            assert time.time() < deadline, "ray start did not open its port in 120 s"
            time.sleep(0.5)
    yield f"127.0.0.1:{port}", env
    head.send_signal(signal.SIGTERM)
    head.wait(timeout=60)
    # `ray start` records its address for later `ray.init()` calls to join; a stopped head leaves it behind
    marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if marker.is_file() and marker.read_text().strip().endswith(f":{port}"):
        marker.unlink()


def test_run_joins_a_cluster_by_address_with_the_same_results(head, tmp_path):
    address, env = head
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat sitting on a mat\nthree apples on a table\n")
    sweep = ["--prompts", str(prompts), "--schedulers", "euler,ddim", "--steps", "1,4", "--seeds", "2",
             "--metrics", "ssim", "--reference-steps", "20"]
    out = tmp_path / "cluster"
    joined = subprocess.run([sys.executable, "-m", "evalkit", "run", *sweep, "--out", str(out), "--no-progress",
                             "--backend", "ray", "--ray-address", address, "--workers", "2"],
                            capture_output=True, text=True, env=env)
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert "rendered 24 new image(s)" in joined.stdout
    local = evalkit.run({"prompts": str(prompts), "schedulers": ["euler", "ddim"], "steps": [1, 4], "seeds": 2,
                         "metrics": ["ssim"], "reference_steps": 20, "out": str(tmp_path / "local")})
    remote = evalkit.run({"prompts": str(prompts), "schedulers": ["euler", "ddim"], "steps": [1, 4], "seeds": 2,
                          "metrics": ["ssim"], "reference_steps": 20, "out": str(out)})  # nothing left to do
    assert remote.stats.rendered == 0
    assert remote.images.key.tolist() == local.images.key.tolist()
    assert remote.images.sha256.tolist() == local.images.sha256.tolist()
    assert remote.scores.sort_values("key").value.tolist() == local.scores.sort_values("key").value.tolist()


def test_an_address_nobody_answers_is_a_one_line_error(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "evalkit", "run", "--out", str(tmp_path / "x"), "--backend", "ray",
                          "--ray-address", f"127.0.0.1:{free_port()}"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: no Ray cluster answers at 127.0.0.1:") and bad.stderr.count("\n") == 1
