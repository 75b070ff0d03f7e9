"""--ray-address HOST:PORT: the same command joins a running cluster (`ray start --head`) instead of
starting one, with results identical to the local backend."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import evalkit

pytest.importorskip("ray")  # a declared test dependency: this only guards a partial local install


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A one-node Ray cluster started the way a user starts one, with token auth (Ray's default)."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    start = subprocess.run(["ray", "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard", "false", "--disable-usage-stats"],
                           capture_output=True, text=True, env=env)
    assert start.returncode == 0, start.stderr[-2000:]
    yield f"127.0.0.1:{port}", env
    subprocess.run(["ray", "stop", "--force"], capture_output=True, env=env)


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
    assert "rendered 20 new image(s)" in joined.stdout
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
