# Branch m2-cumsum-kernel (written without device time): one Triton kernel (kernels/decay_triton.py,
# chunk_decay_kernel) for three cumulative sums that were torch ops. (1) Stage 1, shared by Mamba-2
# and GDN (_scan): the chunk-local cumulative log decay G and the chunk totals, instead of torch's
# cumsum (tensor_kernel_scan_outer_dim, ~27 us a call, twice per Mamba-2 fwd+bwd at 2K x 16 x 48
# heads) and a strided slice + cast. (2) Mamba-2 backward: dg, the row-long reverse sum of dacc
# [N, H, S], in two launches (chunk totals; within-chunk reverse sums plus float64 offsets, written
# [N, S, H]) instead of flip / cumsum / flip (~6 + 34 + 6 us) and the transposed gather after it.
# (3) GDN backward: the within-chunk reverse sum of dG instead of flip / cumsum / flip.
# Expected (estimated from the profile, not measured): Mamba-2 fwd+bwd at 2K ~0.08 ms faster
# (6.15 -> ~6.07 ms: ~45 us from G, ~35 us from dg); GDN the G share and its within-chunk dg (not
# profiled). Here, before the first call,
# put the branch's package files where the device copy will find them:
#   rm -rf .ab_m2-cumsum-kernel && mkdir .ab_m2-cumsum-kernel && git archive m2-cumsum-kernel kernels hf_loglinear | tar -x -C .ab_m2-cumsum-kernel
#   grep -q "^.ab_m2-cumsum-kernel" .git/info/exclude || echo '.ab_m2-cumsum-kernel/' >> .git/info/exclude
# then `bash benchmarks/gpu_session12.sh a` with carry [".whl", ".ab_m2-cumsum-kernel"] (from main's
# checkout: "main" below is the working tree). `a` is `m` then `g`; should a cold machine run it
# past the 600 s a call may take, run `g` alone after it.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
b=m2-cumsum-kernel
pkg /tmp/pkg .
[ -d .ab_$b ] && pkg /tmp/pkg_$b .ab_$b
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
on() { PYTHONPATH=/tmp/pkg_$b:/tmp/site "$@"; }  # run with the branch's package
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
B=benchmarks/bench_kernels.py
ab() {  # $1: variant; $2 / $3: timeouts of its checks / first timing process. The branch's bf16
  # checks (stop on a failure), then fwd / fwd+bwd at 2K / 8K for the branch and main in one run.
  # The first timing process of a cold machine compiles fla's anchors: give it 200 s.
  [ -d /tmp/pkg_$b ] || { echo "no .ab_$b: see the header" >&2; exit 2; }
  on timeout "$2" python $B --variants "$1" --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/${b}_$1_checks.log | grep "check\|FAIL\|Error\|done"
  grep -q "CHECKS FAILED" $OUT/${b}_$1_checks.log && exit 1
  grep -q "checks done" $OUT/${b}_$1_checks.log || { echo "$1 checks did not finish" >&2; exit 1; }
  t=$3
  for who in on main; do
    echo "== $([ $who = on ] && echo $b || echo main)" | tee -a $OUT/$1_ab_timing.log
    $who timeout "$t" python $B --variants "$1" --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee -a $OUT/$1_ab_timing.log | grep "^  (\|ours\|Error"
    t=120
  done
}
case "$1" in
a)  ab mamba2 120 200; ab gdn 150 200 ;;
m)  ab mamba2 120 200 ;;
g)  ab gdn 150 200 ;;
*)  echo "usage: bash benchmarks/gpu_session12.sh a|m|g" >&2; exit 2 ;;
esac
