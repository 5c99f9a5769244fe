"""``vlmguard synth`` killed mid-run and re-run: nothing lost, nothing duplicated; then merged.

The CLI runs as a subprocess with the real tier-1 analyzer; the teacher is the fixed-service-time
OpenAI-compatible server (:mod:`vlmguard_training.synthesis.fake_teacher_server`) on a loopback
port, so the run lasts long enough to be killed in the middle. Seeds are harmless, written here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmguard_training.synthesis.fake_teacher_server import ServerState, ServerThread
from vlmguard_training.synthesis.runner import read_records, rejected_path, shard_path

pytestmark = pytest.mark.integration

N = 40


def _bench(root: Path) -> Path:
    b = root / "bench"
    for name, label in (("vlsbench", "unsafe"), ("vlguard_test", "safe")):
        (b / name).mkdir(parents=True)
        rows = [{"id": f"{name[:2]}{i}", "image": None, "label": label,
                 "text": f"Describe the flowers in garden number {i} of the {name} park.",
                 "category": "Privacy" if label == "unsafe" else "safe_image/safe_instruction"}
                for i in range(N // 2)]
        (b / name / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return b


def _cli(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vlmguard.cli", "synth", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)


def _keys(out: Path) -> list[str]:
    return [str(r["key"]) for p in (shard_path(out, 0, 1), rejected_path(out, 0, 1))
            for r in read_records(p)[0]]


def test_kill_and_resume_then_merge(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    out = tmp_path / "out"
    with ServerThread(ServerState(service_ms=120, capacity=2)) as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(json.dumps({
            "bench_dir": str(bench), "sets": {"vlsbench": 0, "vlguard_test": 0},
            "batch_size": 4, "concurrency": 2,
            "teacher": {"kind": "openai", "base_url": server.url, "model": "fixed",
                        "concurrency": 2},
            "gates": {"enforce": ["schema_valid", "keeps_intent", "unique"]}}))
        args = ("--recipe", str(recipe), "--out", str(out), "--no-progress")
        proc = _cli(*args)
        try:
            deadline = time.monotonic() + 60
            while len(_keys(out)) < 8:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        before = _keys(out)
        assert 8 <= len(before) < N, "killed too late to test resume"
        text_before = shard_path(out, 0, 1).read_text(encoding="utf-8")
        again = _cli(*args)
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr.decode()[-2000:]
    after = _keys(out)
    assert len(after) == len(set(after)) == N  # nothing lost, nothing twice
    assert set(before) <= set(after)
    assert shard_path(out, 0, 1).read_text(encoding="utf-8").startswith(text_before.rstrip("\n"))
    line = json.loads(stdout.decode().strip().splitlines()[-1])
    assert line["records"] == N and line["written_this_run"] == N - len(before)
    summary = json.loads((out / "shard-0-of-1.summary.json").read_text())
    assert summary["duplicates"] == 0 and summary["records"] == N

    # Merge through the CLI, exactly as the pipeline runner calls it; never overwrites.
    ds = tmp_path / "ds"
    merged = subprocess.run([sys.executable, "-m", "vlmguard.cli", "synth", "merge", "--in",
                             str(out), "--out", str(ds)], capture_output=True, timeout=60)
    assert merged.returncode == 0, merged.stderr.decode()[-2000:]
    card = json.loads((ds / "card.json").read_text())
    train = read_records(ds / "train.jsonl")[0]
    assert card["records"] == N and card["accepted"] == len(train) > 0
    assert all(r["final"]["messages"][-1]["role"] == "assistant" for r in train)
    again_merge = subprocess.run([sys.executable, "-m", "vlmguard.cli", "synth", "merge",
                                  "--in", str(out), "--out", str(ds)], capture_output=True,
                                 timeout=60)
    assert again_merge.returncode != 0 and b"never overwrites" in again_merge.stderr
