"""The benchmark scripts' CPU modes, so that a GPU session (scarce time) finds scripts that run.

``bench_kernels.py --smoke`` runs every correctness check of the GPU run on tiny shapes under
TRITON_INTERPRET=1 and exits 1 when one is over its tolerance; ``bench_finetune.py --smoke`` runs
the fine-tuning table on a tiny model with the torch path.
"""
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*args, cwd):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_kernel_bench_checks_pass_on_tiny_shapes(tmp_path):
    out = _run(str(BENCHMARKS / "bench_kernels.py"), "--smoke", cwd=tmp_path)
    assert "smoke: 18 checks passed" in out
    assert "FAILED" not in out


def test_finetune_bench_table_on_a_tiny_model(tmp_path):
    out = _run(str(BENCHMARKS / "bench_finetune.py"), "--smoke", "--work", str(tmp_path / "work"), cwd=tmp_path)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "tokens/row" not in line]
    assert len(rows) == 6 and not any("error" in row or "memory" in row for row in rows), out[-2000:]
    assert (tmp_path / "work" / "results.json").is_file()
