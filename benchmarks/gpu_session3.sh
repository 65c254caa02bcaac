# Session 3's GPU calls (run from the repository root on the device; $OUT collects the logs).
# Call 3: per-kernel profiles after the dg fix, a num_warps sweep of the gradient kernel, and the
# Gated DeltaNet with bf16 operands (checks + forward timings against fla).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
B=benchmarks/bench_kernels.py
short() { grep -v "^-" | cut -c1-60,100-150; }
python $B --profile 2048,65536 2>&1 | tee $OUT/profile.log | short
for w in 4 16; do HF_LOGLINEAR_GRAD_WARPS=$w python $B --profile 2048 2>&1 | tee $OUT/profile_warps$w.log | short | head -8; done
HF_LOGLINEAR_DELTA_BF16=1 timeout 200 python $B --variants gdn --lengths 2048,8192 --skip-decode 2>&1 | tee $OUT/gdn_bf16.log | grep -v "^|" | tail -22
timeout 100 python $B --variants gdn --lengths 2048,8192 --skip-decode --skip-checks 2>&1 | tee $OUT/gdn_tf32.log | grep "gdn"
