# Session 22 (2026-12-01): the delta rule's training path in segments (chunk_triton._segments with
# gradients, each segment's backward recomputing through torch) on the GPU for the first time.
# a: carrying [".whl"]: (1) its check against float64 in bf16, cut into one-chunk segments
#    (bench_kernels.py's "segments" case); (2) GDN fwd and fwd+bwd at B = 1 for 32K and 128K with
#    the default budget, then 128K in one pass (--delta-state-budget 1000); (3) 1M tokens.
source benchmarks/gpu_lib.sh
long() {  # $1: label, $2: seconds, rest: bench_kernels.py arguments
  local label=$1 t; t=$(cap $2); shift 2
  [ "$t" = 0 ] && { note "$label: not run (time)"; return; }
  ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths '' "$@" > $OUT/$label.log 2>&1
  note "$label: rc $? (${SECONDS} s)"; grep "long\|BUDGET\|memory" $OUT/$label.log | cut -c1-300 | tee -a $OUT/summary.log
}
case "$1" in
a)
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks segments \
      > $OUT/segments_check.log 2>&1
    note "segments check: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/segments_check.log | tee -a $OUT/summary.log
    long long_default 150 --long 32768,131072
    long long_one_pass 90 --long 131072 --delta-state-budget 1000
    long long_1m 400 --long 1048576 ;;
b)  # carrying [".whl"], after a (the training segments' torch recomputation: 12.5 s at 128K, 79 s at
    # 1M): segments.py's carried path (each power-of-two segment fresh through the Triton forward
    # and backward, the carried level states read and handed on in torch). Its check in bf16 cut
    # into one-chunk segments; 128K by default (one pass if it fits), cut into 32K segments
    # (--delta-state-budget 40), and 1M.
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks segments,dense \
      > $OUT/segments_check.log 2>&1
    note "segments check: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/segments_check.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/segments_check.log && exit 1
    long long_default 100 --long 131072
    long long_cut 100 --long 131072 --delta-state-budget 40
    long long_1m 300 --long 1048576 ;;
*)  echo "usage: bash benchmarks/gpu_session22.sh a|b" >&2; exit 2 ;;
esac
