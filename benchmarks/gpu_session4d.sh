# Session 4's fourth GPU call: which GDN forward configuration faults (call 3: an illegal
# access in the level scan with bf16 at K = 192), compute-sanitizer on the failing one.
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1 CUDA_LAUNCH_BLOCKING=1
D=benchmarks/debug_gdn_forward.py
for args in "192 384 bfloat16" "192 384 bfloat16 1" "128 128 bfloat16" "64 64 bfloat16" "192 384 float32"; do
  timeout 60 python $D $args 2>&1 | tee -a $OUT/gdn_forward_fault.log | tail -4
done
timeout 120 /usr/local/cuda/bin/compute-sanitizer --print-limit 2 python $D 192 384 bfloat16 2>&1 | grep -v "Host Frame" | tee $OUT/gdn_forward_sanitizer.log | head -30
