# Session 4's device calls, in order (`bash benchmarks/gpu_session4.sh a` .. `f`, from the
# repository root on the device with .whl carried; $OUT collects the logs, copied to
# benchmarks/logs/*_h200_2026-11-30d* and *_2026-11-30e*). RESULTS.md and gpu_notes.md say what
# each found. a-d ran on the code of their own commits; the kernels changed between calls.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
B=benchmarks/bench_kernels.py
case "$1" in
a)  # where the (session 3) GDN forward's time goes; which kernel of its backward faults; decode at every batch
    timeout 150 python $B --variants gdn --profile 2048,8192 2>&1 | tee $OUT/gdn_profile.log | tail -40
    for args in "192 384 bfloat16" "192 384 bfloat16 ieee" "128 128 bfloat16" "64 64 bfloat16"; do
      CUDA_LAUNCH_BLOCKING=1 timeout 90 python benchmarks/debug_gdn_backward.py $args 2>&1 | tee -a $OUT/gdn_fault.log | tail -8
    done
    timeout 150 /usr/local/cuda/bin/compute-sanitizer --print-limit 5 python benchmarks/debug_gdn_backward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_sanitizer.log | tail -30
    timeout 150 python $B --skip-checks --variants mamba2 --lengths '' 2>&1 | tee $OUT/decode.log | grep "decode\|copy" ;;
b)  # new GDN forward: scan tilings (each checked), the backward fault case, decode tilings
    timeout 200 python benchmarks/sweep_tiles.py scan 2>&1 | tee $OUT/sweep_scan.log | tail -12
    CUDA_LAUNCH_BLOCKING=1 timeout 80 python benchmarks/debug_gdn_backward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_fault.log | tail -3
    HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 timeout 120 python $B --variants gdn --quick --skip-decode 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error"
    timeout 150 python benchmarks/sweep_tiles.py step 2>&1 | tee $OUT/sweep_step.log | tail -12 ;;
c)  # split top scan: checks, GDN profile, GDN timings (the GDN parts hit a fault)
    export HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1
    timeout 300 python $B --quick --skip-decode 2>&1 | tee $OUT/quick.log | grep -v "^|" | grep -v "^  ("
    timeout 60 python $B --variants gdn --profile 2048 2>&1 | tee $OUT/gdn_profile.log | grep "kernel\|Self CUDA"
    timeout 150 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/gdn_timing.log | grep "gdn\|Error" ;;
d)  # which GDN forward configuration faults
    export CUDA_LAUNCH_BLOCKING=1
    for args in "192 384 bfloat16" "192 384 bfloat16 1" "128 128 bfloat16" "64 64 bfloat16" "192 384 float32"; do
      timeout 60 python benchmarks/debug_gdn_forward.py $args 2>&1 | tee -a $OUT/gdn_forward_fault.log | tail -4
    done
    timeout 120 /usr/local/cuda/bin/compute-sanitizer --print-limit 2 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | grep -v "Host Frame" | tee $OUT/gdn_forward_sanitizer.log | head -30 ;;
e)  # masked keys scaled in registers (still faulted); Mamba-2 timings with the anchors
    CUDA_LAUNCH_BLOCKING=1 timeout 40 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_forward_fault.log | tail -2
    export HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1
    timeout 100 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT 2>&1 | tee $OUT/gdn_timing.log | grep "gdn\|Error"
    timeout 170 python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,16384,65536 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "mamba2\|attn\|Error"
    timeout 150 python $B --variants gdn --quick --skip-decode --lengths '' 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error" ;;
f)  # not run (no device time left): the final GDN scan's fault check, error and forward timings
    timeout 120 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/gdn_forward.log | grep -v Warning | tail -6 ;;
*)  echo "usage: bash benchmarks/gpu_session4.sh a|b|c|d|e|f" >&2; exit 2 ;;
esac
