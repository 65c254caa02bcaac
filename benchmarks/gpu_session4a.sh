# Session 4's first GPU call (repository root on the device; $OUT collects the logs): where the
# Gated DeltaNet forward spends its time, which kernel of its Triton backward faults with bf16
# inputs at key 192, and the decode table at every batch (1, 16, 64, 256).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
B=benchmarks/bench_kernels.py
timeout 150 python $B --variants gdn --profile 2048,8192 2>&1 | tee $OUT/gdn_profile.log | tail -40
for args in "192 384 bfloat16" "192 384 bfloat16 ieee" "128 128 bfloat16" "64 64 bfloat16"; do
  CUDA_LAUNCH_BLOCKING=1 timeout 90 python benchmarks/debug_gdn_backward.py $args 2>&1 | tee -a $OUT/gdn_fault.log | tail -8
done
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
echo "compute-sanitizer: ${SAN:-none}"
if [ -n "$SAN" ]; then timeout 150 $SAN --print-limit 5 python benchmarks/debug_gdn_backward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_sanitizer.log | tail -30; fi
timeout 150 python $B --skip-checks --variants mamba2 --lengths '' 2>&1 | tee $OUT/decode.log | grep "decode\|copy"
