# Session 4's second GPU call: the new Gated DeltaNet forward (chunk factors once per chunk,
# bf16 operands): its level-scan tiles swept (each checked against float64 first), the dense
# check with the Triton backward, the backward's bf16 fault at key 192, then the decode sweep.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
timeout 200 python benchmarks/sweep_tiles.py scan 2>&1 | tee $OUT/sweep_scan.log | tail -12
CUDA_LAUNCH_BLOCKING=1 timeout 80 python benchmarks/debug_gdn_backward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_fault.log | tail -3
HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 timeout 120 python benchmarks/bench_kernels.py --variants gdn --quick --skip-decode 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error"
timeout 150 python benchmarks/sweep_tiles.py step 2>&1 | tee $OUT/sweep_step.log | tail -12
