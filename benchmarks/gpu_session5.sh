# The branch session5-candidates (main of session 4 + gdn-scan-ktiles, decode-one-reduction,
# m2-grad-kernel, m2-output-kernel; each passed the interpreter tests and the sm_90 compile test,
# none has run on a GPU). Two device calls (each under 600 s), from the repository root with
# .whl carried:   bash benchmarks/gpu_session5.sh a   then   ... b
# a: whether the GDN forward faults (blocking launches, one process), every check (the --quick
#    run also times Mamba-2 at L = 15 and 1), the GDN forward times; b: the Mamba-2 table to put
#    beside main's (RESULTS.md, session 4: same GPU kind and versions), its profile, the decode
#    sweep. A fault: rerun the failing case under /usr/local/cuda/bin/compute-sanitizer and
# bisect by merging one branch at a time.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
B=benchmarks/bench_kernels.py
case "$1" in
a)  CUDA_LAUNCH_BLOCKING=1 timeout 60 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_forward_fault.log | tail -2
    HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 timeout 330 python $B --quick --skip-decode 2>&1 | tee $OUT/checks.log | grep "check\|FAIL\|Error\|^  ("
    timeout 60 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/gdn_forward.log | grep "gdn fwd\|fla" ;;
b)  timeout 200 python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,16384,65536 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  ("
    timeout 60 python $B --profile 2048 2>&1 | tee $OUT/mamba2_profile.log | grep "kernel\|Self CUDA"
    timeout 150 python benchmarks/sweep_tiles.py step 2>&1 | tee $OUT/sweep_step.log | tail -10 ;;
*)  echo "usage: bash benchmarks/gpu_session5.sh a|b" >&2; exit 2 ;;
esac
