# The next session's device calls (gpu_notes.md, version 8, "Next session's first GPU calls").
# Branches written in session 7 without device time: m2-readout-in-scan (the Mamba-2 backward
# without readout_grad_kernel, whose work moved into the reverse level scan), m2-readout-top (that,
# and the top's reverse walk skips its first window, where its state is zero) and gdn-top-empty
# (the GDN top scan skips its empty closed part and its pending sum's useless products). Here,
# before the first call, put each branch's package files where the device copy will find them:
#   for b in m2-readout-in-scan m2-readout-top gdn-top-empty; do rm -rf .ab_$b && mkdir .ab_$b && git archive $b kernels hf_loglinear | tar -x -C .ab_$b; done
#   grep -q "^.ab_m2-readout-top" .git/info/exclude || printf '.ab_m2-readout-in-scan/\n.ab_m2-readout-top/\n.ab_gdn-top-empty/\n' >> .git/info/exclude
# then `bash benchmarks/gpu_session9.sh a` with carry [".whl", ".ab_m2-readout-in-scan", ".ab_m2-readout-top", ".ab_gdn-top-empty"].
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
pkg /tmp/pkg .
for b in m2-readout-in-scan m2-readout-top gdn-top-empty; do [ -d .ab_$b ] && pkg /tmp/pkg_$b .ab_$b; done
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
on() { local b=$1; shift; PYTHONPATH=/tmp/pkg_$b:/tmp/site "$@"; }  # run with branch $b's package
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
B=benchmarks/bench_kernels.py
case "$1" in
a)  b=m2-readout-top  # its Mamba-2 checks (fp32 and bf16; it holds m2-readout-in-scan's change too),
    # then fwd / fwd+bwd at 2K / 8K / 64K for both branches and main in the same run, then its
    # profile at 2K
    on $b timeout 200 python $B --variants mamba2 --skip-decode --lengths '' 2>&1 | tee $OUT/${b}_checks.log | grep "check\|FAIL\|Error\|done"
    grep -q "CHECKS FAILED" $OUT/${b}_checks.log && exit 1
    for who in "on m2-readout-top" "on m2-readout-in-scan" main; do
      echo "== $who" | tee -a $OUT/mamba2_ab_timing.log
      $who timeout 120 python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,8192,65536 2>&1 | tee -a $OUT/mamba2_ab_timing.log | grep "ours\|Error"
    done
    on $b timeout 100 python $B --variants mamba2 --profile 2048 2>&1 | tee $OUT/${b}_profile.log | grep "kernel\|Self CUDA" ;;
b)  # the fp32 GDN checks beyond the dense case (never run on a GPU: ~210 s of compiling per set of
    # kernel variants; session 7's 450 s finished only the dense case): one process per case, in
    # parallel (the device has 16 cores; compiling is what takes the time)
    for c in packed init varlen; do
      main timeout 500 python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 --gdn-checks $c > $OUT/gdn_checks_fp32_$c.log 2>&1 &
    done
    wait
    grep -h "check\|FAIL\|Error\|done" $OUT/gdn_checks_fp32_*.log ;;
c)  b=gdn-top-empty  # fault check at 192 / 384 bf16, the bf16 GDN checks, then GDN fwd / fwd+bwd at
    # 2K / 8K for it and for main in the same run
    CUDA_LAUNCH_BLOCKING=1 on $b timeout 90 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/${b}_fault.log | grep "ok\|FAIL\|Error"
    grep -q "^ok" $OUT/${b}_fault.log || exit 1
    on $b timeout 150 python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/${b}_checks.log | grep "check\|FAIL\|Error\|done"
    for who in "on $b" main; do
      echo "== $who" | tee -a $OUT/gdn_ab_timing.log
      $who timeout 150 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee -a $OUT/gdn_ab_timing.log | grep "ours\|Error"
    done ;;
*)  echo "usage: bash benchmarks/gpu_session9.sh a|b|c" >&2; exit 2 ;;
esac
