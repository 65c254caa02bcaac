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
    # products ran in IEEE fp32, in the backward) and e's table (GDN fwd 2.63x fla's at 16K x 2:
    # the prefix scan's recurrence has 6 x 6 programs a row): (1) _carried walks each block of 8
    # chunks one chunk after another (no K x K transition formed; log-depth products over block
    # totals only), its products TF32 in forward and backward for half inputs (_Product); (2) the
    # prefix scan halves its value tile until its programs cover the SMs (_spread_value_tiles).
    # Checks (dense forward + every gradient, segments), the GDN forward table at 2K .. 64K beside
    # .ab_prev's kernels (forward-only, same call), 1M beside b's code. Measured: checks <= 5.7e-3;
    # forward 2K / 8K / 16K / 32K 2.046 / 2.694 / 3.177 / 3.794 ms against .ab_prev's 2.041 / 2.696
    # / 2.906 / 3.664 (64K cut off by the step's 70 s); 1M fwd+bwd 4258 ms / 59.0 GiB against b's
    # 8331 ms / 78.3 GiB.
    t=$(cap 100)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks dense,segments \
      > $OUT/checks.log 2>&1
    note "checks: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/checks.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/checks.log && exit 1
    pkg /tmp/pkgprev .ab_prev
    for tree in /tmp/pkg /tmp/pkgprev; do
      t=$(cap 70)
      PYTHONPATH=$tree:/tmp/site timeout $t python $B --variants gdn --skip-checks --skip-decode --forward-only \
        --lengths 2048,8192,16384,32768,65536 > $OUT/fwd_$(basename $tree).log 2>&1
      note "forward table $tree: rc $? (${SECONDS} s)"; grep "^  (" $OUT/fwd_$(basename $tree).log | grep -v sdpa | tee -a $OUT/summary.log
    done
    long long_1m 120 --long 1048576
    t=$(cap 100)
    PYTHONPATH=/tmp/pkgprev:/tmp/site timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths '' --long 1048576 \
      > $OUT/prev_1m.log 2>&1
    note "prev 1m: rc $? (${SECONDS} s)"; grep "long" $OUT/prev_1m.log | tee -a $OUT/summary.log ;;
g)  # carrying [".whl"], after f (spreading the prefix scan's value tiles over the SMs made the
    # forward slower: 2.91 -> 3.18 ms at 16K x 2, reverted; GDN fwd is 2.62x fla's there, over the
    # 2.5x target): per-launch times at 8K x 4 and 16K x 2 and the prefix scan's launch options
    # at 16K (debug_gdn_forward.py sweep, each checked against float64 first)
    P=prefix_scan_delta_kernel
    export SPLIT_LENGTHS=8192,16384
    sweep split16k /tmp/pkg 200 default "$P/BOUNDARIES=0:num_warps=8" \
      "$P/BOUNDARIES=0:num_stages=2" "$P/BOUNDARIES=1:num_warps=8" "$P/BOUNDARIES=1:num_stages=3" ;;
h)  # carrying [".whl"], after g (per launch at 16K x 2: UT 0.42, recurrence 0.53 as at 8K, boundaries
    # 1.14, output 0.80; the boundaries at 3 stages 1.10): the prefix scan's boundaries at 3
    # stages. The bf16 dense check, then the GDN forward table at 2K .. 64K (ours, num_levels=1,
    # fla) in one run. Measured: check o 3.9e-3, gradients <= 4.3e-3; forward 2.057 / 2.677 / 2.851 /
    # 3.596 / 7.668 ms at 2K / 8K / 16K / 32K / 64K against fla's 0.875 / 1.096 / 1.110 / 1.680 /
    # 3.327: 2.35x / 2.44x / 2.57x / 2.14x / 2.30x.
    t=$(cap 70)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks dense \
      > $OUT/checks.log 2>&1
    note "checks: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/checks.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/checks.log && exit 1
    t=$(cap 150); mkdir -p $OUT/tables
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --forward-only --lengths 2048,8192,16384,32768,65536 \
      --out $OUT/tables > $OUT/fwd.log 2>&1
    note "forward table: rc $? (${SECONDS} s)"; grep "^  (" $OUT/fwd.log | tee -a $OUT/summary.log ;;
i)  # carrying [".whl"], after h (16K x 2 still 2.57x fla's forward): launch options untried at
    # 16K, per launch, 2K beside it: the boundaries at 2 warps, the output kernel at 3 stages and at
    # 8 warps. Measured at 16K / 2K: default 2.87 / 2.07 ms; boundaries at 2 warps 41.0 / 22.0 (that
    # launch 39.2 / 20.6: spilling); output at 3 stages 2.87 / 2.07 (no change); at 8 warps 3.11 / 2.25.
    export SPLIT_LENGTHS=16384,2048
    sweep split16k /tmp/pkg 150 default "prefix_scan_delta_kernel/BOUNDARIES=1:num_warps=2" \
      "chunk_output_kernel:num_stages=3" "chunk_output_kernel:num_warps=8" ;;
*)  echo "usage: bash benchmarks/gpu_session22.sh a|b|c|d|e|f|g|h|i" >&2; exit 2 ;;
esac
