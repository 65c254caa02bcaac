# Session 23 (2026-12-01): the delta rule's prefix scan in one launch where its recurrence leaves
# SMs idle (chunk_triton._overlap_prefix; the boundaries, in order of their chunk, wait for the
# recurrence's published progress), against main at the session's start (3936a3e) and the same
# code in two launches. The GDN forward at 16K x 2 was 2.57x fla's (target 2.5x): 72 recurrence
# programs (2 rows x 6 heads x 6 value tiles) held 72 of the 132 SMs for 0.53 ms while the
# boundaries (1.10 ms) waited for the launch to end.
source benchmarks/gpu_lib.sh
case "$1" in
a)  # carrying [".whl", ".ab_main"] (git archive of 3936a3e): the forward checked with launches
    # blocking (T = 1000, 2 heads: one launch), the bf16 dense check (forward and every gradient) in
    # one launch, then per-launch times at 2K .. 32K: main, two launches, one launch.
    fault_check one_launch
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks dense \
      --prefix-overlap on > $OUT/checks.log 2>&1
    note "checks (one launch): rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/checks.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/checks.log && exit 1
    export SPLIT_LENGTHS=2048,8192,16384,32768
    pkg /tmp/pkgmain .ab_main
    sweep main /tmp/pkgmain 120 default
    export PREFIX_OVERLAP=0; sweep two /tmp/pkg 100 default
    export PREFIX_OVERLAP=1; sweep one /tmp/pkg 100 default ;;
*)  echo "usage: bash benchmarks/gpu_session23.sh a" >&2; exit 2 ;;
esac
