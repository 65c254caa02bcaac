# Session 3's last GPU call (run from the repository root on the device; $OUT collects the logs):
# log-linear Mamba-2 checks, timings 2K..64K with the anchors, 128K and 1M tokens; then the Gated
# DeltaNet Triton backward (its first GPU run): the dense check, then fwd / fwd+bwd at 2K and 8K.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
B=benchmarks/bench_kernels.py
timeout 300 python $B --variants mamba2 --skip-decode --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2.log | grep -v "^|" | grep -v "^  ("
export HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1
timeout 150 python $B --variants gdn --quick --skip-decode 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error"
timeout 110 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/gdn_timing.log | grep "gdn"
