# Session 5's device calls, in order (`bash benchmarks/gpu_session5.sh a` .. , from the
# repository root on the device, carrying .whl and .ab_main). Calls a and b ran session 4's main
# plus four branches written without device time (gdn-scan-ktiles, decode-one-reduction,
# m2-output-kernel, m2-grad-kernel); the GDN forward faulted in a, so from c on gdn-scan-ktiles
# is out again (.ab_ktiles: the kernels with it, for c's sanitizer run). .ab_main/kernels, when carried, holds
# session 4's kernels (`git archive 88ebecd kernels | tar -x -C .ab_main`): the same run then
# times them beside this commit's, so every ratio below comes from one run. Logs land in $OUT,
# copied to benchmarks/logs/*_h200_2026-11-30f*; RESULTS.md and gpu_notes.md say what each found.
# HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 was the opt-in to the GDN Triton backward on CUDA until
# calls e and f checked it; since then it is the default and the variable does nothing.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the kernels folder to install
  mkdir -p "$1/hf_loglinear" && cp -r hf_loglinear/. "$1/hf_loglinear/" && cp -r conversion model_cards "$1/hf_loglinear/"
  cp -r "$2" "$1/hf_loglinear/kernels"
}
pkg /tmp/pkg kernels
[ -d .ab_main/kernels ] && pkg /tmp/pkg_a .ab_main/kernels
# the compiled kernels outlive a call while the machine stays warm
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
A="env PYTHONPATH=/tmp/pkg_a:/tmp/site"  # session 4's kernels
B=benchmarks/bench_kernels.py
case "$1" in
a)  # GDN forward (fault check at 192 / 384 bf16, error, times) and the Mamba-2 checks, each new vs old
    timeout 90 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/gdn_forward.log | grep "ok\|FAIL\|Error\|gdn fwd\|fla"
    $A timeout 80 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/gdn_forward_old.log | grep "ok\|FAIL\|Error\|gdn fwd\|fla"
    timeout 220 python $B --variants mamba2 --quick --skip-decode 2>&1 | tee $OUT/mamba2_quick.log | grep "check\|FAIL\|Error\|^  ("
    $A timeout 110 python $B --variants mamba2 --quick --skip-checks --skip-decode 2>&1 | tee $OUT/mamba2_quick_old.log | grep "Error\|^  (" ;;
b)  # run as a command line right after a (the same lines): (Mamba-2 2K / 16K / 64K beside the anchors, decode at every batch):
    timeout 230 python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,16384,65536 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|Error"
    timeout 90 python $B --variants mamba2 --skip-checks --lengths '' 2>&1 | tee $OUT/decode.log | grep "decode\|copy\|^| [0-9]" ;;
c)  # after call a's fault: gdn-scan-ktiles taken back out (.ab_ktiles: the kernels with it). GDN checks
    # with the Triton backward, GDN fwd / fwd+bwd beside num_levels=1 and fla, and where the K-tiled scan faults
    export HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1
    timeout 240 python $B --variants gdn --quick --skip-decode --lengths '' 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error"
    timeout 110 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT 2>&1 | tee $OUT/gdn_timing.log | grep "^  (\|Error"
    pkg /tmp/pkg_k .ab_ktiles/kernels
    PYTHONPATH=/tmp/pkg_k:/tmp/site CUDA_LAUNCH_BLOCKING=1 timeout 150 /usr/local/cuda/bin/compute-sanitizer --print-limit 2 \
      python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | grep -v "Host Frame" | tee $OUT/ktiles_sanitizer.log | head -24 ;;
d)  # Mamba-2 at 8K / 32K beside the anchors and alone at 128K / 1M; the GDN check with its Triton
    # backward in bf16 only (with fp32 too it did not finish compiling in 240 s, call c); Mamba-2 profile
    timeout 200 python $B --variants mamba2 --skip-checks --skip-decode --lengths 8192,32768 --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|long\|T=\|Error"
    HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 timeout 240 python $B --variants gdn --quick --skip-decode --check-dtypes bfloat16 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error"
    timeout 70 python $B --variants mamba2 --profile 2048 2>&1 | tee $OUT/mamba2_profile.log | grep "kernel\|Self CUDA" ;;
e)  # on the machine call d left warm: the GDN check with its Triton backward in fp32 (~210 s, compiling)
    HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 timeout 400 python $B --variants gdn --quick --skip-decode --check-dtypes float32 2>&1 | tee $OUT/gdn_checks_fp32.log | grep "check\|FAIL\|Error\|done" ;;
f)  # every GDN check (dense, packed, from an initial state, varlen) in bf16, Triton backward
    HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1 timeout 280 python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/gdn_checks_full_bf16.log | grep "check\|FAIL\|Error\|done" ;;
g)  # the GDN fwd+bwd by recomputation (the default on CUDA until then), to compare with call c's Triton backward
    timeout 200 python $B --variants gdn --skip-checks --skip-decode --lengths 2048 2>&1 | tee $OUT/gdn_timing_recompute.log | grep "^  (\|Error" ;;
h)  # where the GDN forward's time goes now
    timeout 110 python $B --variants gdn --profile 2048 2>&1 | tee $OUT/gdn_profile.log | grep "kernel\|Self CUDA" ;;
*)  echo "usage: bash benchmarks/gpu_session5.sh a|b|c|d|e|f|g|h" >&2; exit 2 ;;
esac
