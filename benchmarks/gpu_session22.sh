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
c)  # carrying [".whl", ".ab_prev"] (git archive of 64d8e11, b's code), after b (1M fwd+bwd 8.38 s):
    # _carried's products in two tiers (blocks of 8 chunks, then the block totals) and with TF32
    # for half inputs. Its bf16 check in one-chunk segments, then 64K in one pass (what each of
    # the 16 segments at 1M costs fresh) and 1M, b's code beside it. Measured: check 5.7e-3; 64K
    # 117.0 ms / 32.8 GiB; 1M fwd+bwd 4876 ms / 59.0 GiB against b's 8335 ms / 78.3 GiB.
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks segments \
      > $OUT/segments_check.log 2>&1
    note "segments check: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/segments_check.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/segments_check.log && exit 1
    long long_64k 60 --long 65536
    long long_1m 120 --long 1048576
    pkg /tmp/pkgprev .ab_prev
    t=$(cap 120)
    PYTHONPATH=/tmp/pkgprev:/tmp/site timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths '' --long 1048576 \
      > $OUT/prev_1m.log 2>&1
    note "prev 1m: rc $? (${SECONDS} s)"; grep "long" $OUT/prev_1m.log | tee -a $OUT/summary.log ;;
d)  # carrying [".whl"], after c (1M fwd+bwd 4.88 s, against 8.33 s for b's code; 64K in one pass
    # 117 ms, so ~1.9 s of the 1M run is the fresh segments): where the rest goes. torch.profiler
    # over 3 fwd+bwd of 128K cut into two 64K segments (--delta-state-budget 40).
    t=$(cap 150)
    ours timeout $t python $B --variants gdn --profile 131072 --delta-state-budget 40 > $OUT/profile.log 2>&1
    note "profile: rc $? (${SECONDS} s)"; grep -A40 "fwd+bwd" $OUT/profile.log | cut -c1-220 | tee -a $OUT/summary.log ;;
e)  # carrying [".whl"]: the GDN side-by-side table past 8K (ours, num_levels=1, fla's
    # chunk_gated_delta_rule, SDPA; B = 32768 / T) at 16K, 32K, 64K, and 2K again in the same run
    t=$(cap 400); mkdir -p $OUT/tables
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,16384,32768,65536 --out $OUT/tables \
      > $OUT/gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "ours\|fla\|sdpa\|T=" $OUT/gdn_timing.log | tee -a $OUT/summary.log ;;
f)  # carrying [".whl", ".ab_prev"] (64d8e11, b's code), after d's profile (per 128K fwd+bwd in two
    # segments: the fresh Triton launches ~238 ms, the carried torch part ~220 ms, half of whose
    # products ran in IEEE fp32, in the backward): _carried walks each block of 8 chunks one chunk
    # after another (no K x K transition formed; log-depth products over block totals only), its
    # products TF32 in forward and backward for half inputs (_Product). Check, 64K once more, 1M
    # beside b's code.
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks segments \
      > $OUT/segments_check.log 2>&1
    note "segments check: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/segments_check.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/segments_check.log && exit 1
    long long_1m 120 --long 65536,1048576
    pkg /tmp/pkgprev .ab_prev
    t=$(cap 120)
    PYTHONPATH=/tmp/pkgprev:/tmp/site timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths '' --long 1048576 \
      > $OUT/prev_1m.log 2>&1
    note "prev 1m: rc $? (${SECONDS} s)"; grep "long" $OUT/prev_1m.log | tee -a $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session22.sh a|b|c|d|e|f" >&2; exit 2 ;;
esac
