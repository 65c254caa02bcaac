"""The benchmark scripts' CPU modes, so that a GPU session (scarce time) finds scripts that run.

``bench_kernels.py --smoke`` runs every correctness check of the GPU run on tiny shapes under
TRITON_INTERPRET=1 and exits 1 when one is over its tolerance; ``bench_finetune.py --smoke`` runs
the fine-tuning table on a tiny model with the torch path; ``compile_sm90.py`` compiles every
kernel (the Gated DeltaNet Triton backward included) for sm_90 (H100/H200) and fails when one
needs more shared memory than the GPU has, which the interpreter cannot show.
"""
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*args, cwd, interpret=True):
    env = {**os.environ, "TRITON_INTERPRET": "1" if interpret else "0", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_kernel_bench_checks_pass_on_tiny_shapes(tmp_path):
    out = _run(str(BENCHMARKS / "bench_kernels.py"), "--smoke", cwd=tmp_path)
    assert "smoke: 22 checks passed" in out  # the GDN training segments' checks are the last four
    assert "check gdn segments of 64 dense T=200" in out and "check gdn segments of 64 T=200" in out
    assert "FAILED" not in out


def test_finetune_bench_table_on_a_tiny_model(tmp_path):
    out = _run(str(BENCHMARKS / "bench_finetune.py"), "--smoke", "--work", str(tmp_path / "work"), cwd=tmp_path)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "tokens/row" not in line]
    assert len(rows) == 6 and not any("error" in row or "memory" in row for row in rows), out[-2000:]
    assert (tmp_path / "work" / "results.json").is_file()


def test_kernels_compile_for_sm90_within_shared_memory(tmp_path):
    out = _run(str(BENCHMARKS / "compile_sm90.py"), "--dtypes", "bfloat16", cwd=tmp_path, interpret=False)
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| mamba2") or line.startswith("| gdn")]
    assert {row[3] for row in rows} == {"level_scan_kernel", "chunk_output_kernel", "decode_step_kernel",
                                         "ut_factors_kernel", "level_scan_bwd_kernel", "chunk_grad_kernel",
                                         "level_scan_delta_kernel", "prefix_scan_delta_kernel",
                                         "level_scan_bwd_delta_kernel", "state_pairs_kernel",
                                         "chunk_grad_delta_kernel", "chunk_decay_kernel", "chunk_offsets_kernel"}
    assert all(row[5].startswith("yes") for row in rows)
