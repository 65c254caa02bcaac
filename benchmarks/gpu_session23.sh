# Session 23 (2026-12-01): the delta rule's prefix scan in one launch where its recurrence leaves
# SMs idle (chunk_triton._prefix_delta_scan; the boundaries, in order of their chunk, wait for the
# recurrence's published progress), against main at the session's start (3936a3e) and the same
# code in two launches. The GDN forward at 16K x 2 was 2.57x fla's (target 2.5x): 72 recurrence
# programs (2 rows x 6 heads x 6 value tiles) held 72 of the 132 SMs for 0.53 ms while the
# boundaries (1.10 ms) waited for the launch to end.
source benchmarks/gpu_lib.sh
case "$1" in
a)  # carrying [".whl", ".ab_main"] (git archive of 3936a3e): the forward checked with launches
    # blocking (T = 1000, 2 heads: one launch), the bf16 dense check (forward and every gradient) in
    # one launch, then per-launch times at 2K .. 32K: main, two launches, one launch (commit
    # 9c17579, which had both modes). Measured: checks pass (o 3.9e-3 .. 6.5e-3, gradients <= 4.3e-3);
    # forward 2K / 8K / 16K / 32K: main 2.09 / 2.69 / 2.89 / 3.61 ms, two launches (boundaries in
    # order of their chunk) 2.09 / 2.69 / 2.89 / 3.64, one launch 2.10 / 2.50 / 2.72 / 2.87 (the
    # prefix launch 1.076 / 1.329 / 1.471 / 1.592 against 0.352 + 0.716, 0.565 + 0.957, 0.562 +
    # 1.083, 1.154 + 1.205). One launch is never slower, so the two-launch mode was removed.
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
b)  # carrying [".whl"], after a: the code with one launch only. bf16 dense check, the recurrence's
    # publishing interval (PUBLISH, chunks) 8 / 4 / 16 per launch at 2K .. 32K, then the GDN
    # forward table at 2K .. 64K (ours, num_levels=1, fla) in one run. Measured: check o 3.9e-3,
    # gradients <= 4.3e-3; PUBLISH 8 / 4 / 16: 2.09 / 2.13 / 2.08 ms at 2K, 2.50 / 2.52 / 2.48 at 8K,
    # 2.70 / 2.74 / 2.71 at 16K, 2.87 / 2.90 / 2.87 at 32K (8 kept); table: ours 2.083 / 2.499 /
    # 2.703 / 2.861 / 6.246 ms at 2K / 8K / 16K / 32K / 64K against fla's 0.878 / 1.102 / 1.114 /
    # 1.684 / 3.344: 2.37x / 2.27x / 2.43x / 1.70x / 1.87x.
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks dense \
      > $OUT/checks.log 2>&1
    note "checks: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/checks.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/checks.log && exit 1
    export SPLIT_LENGTHS=2048,8192,16384,32768
    sweep publish /tmp/pkg 150 default prefix_scan_delta_kernel:PUBLISH=4 prefix_scan_delta_kernel:PUBLISH=16
    t=$(cap 200); mkdir -p $OUT/tables
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --forward-only --lengths 2048,8192,16384,32768,65536 \
      --out $OUT/tables > $OUT/fwd.log 2>&1
    note "forward table: rc $? (${SECONDS} s)"; grep "^  (" $OUT/fwd.log | tee -a $OUT/summary.log ;;
c)  # carrying [".whl"], after b: the segments' check in bf16 (one-chunk pieces from position 0,
    # and from a state at 200 with the final state: the carried path from a state, never run on a
    # GPU), the GDN table with fwd+bwd at 2K .. 64K (ours, num_levels=1, fla, SDPA) in one run, and
    # the 1M-token fwd+bwd at B = 1. Measured: segments check o 5.7e-3 / 4.9e-3, every gradient
    # <= 4.8e-3 (dinit 2.0e-3); fwd 2.080 / 2.498 / 2.706 / 2.865 / 6.257 ms at 2K .. 64K against
    # fla's 0.879 / 1.104 / 1.111 / 1.686 / 3.344 (2.37x / 2.26x / 2.44x / 1.70x / 1.87x); fwd+bwd
    # 32.32 / 41.88 / 46.35 / 52.84 / 116.43 ms against num_levels=1's 15.94 / 16.85 / 17.62 / 21.03
    # / 41.63 (2.03x / 2.49x / 2.63x / 2.51x / 2.80x); 1M fwd 261.4 ms / 59.8 GiB, fwd+bwd 4244.5 ms
    # / 59.0 GiB.
    t=$(cap 100)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 --gdn-checks segments \
      > $OUT/segments_check.log 2>&1
    note "segments check: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/segments_check.log | tee -a $OUT/summary.log
    t=$(cap 260); mkdir -p $OUT/tables
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192,16384,32768,65536 \
      --out $OUT/tables > $OUT/gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "^  (" $OUT/gdn_timing.log | tee -a $OUT/summary.log
    t=$(cap 120)
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths '' --long 1048576 > $OUT/long_1m.log 2>&1
    note "long 1m: rc $? (${SECONDS} s)"; grep "long\|memory" $OUT/long_1m.log | cut -c1-300 | tee -a $OUT/summary.log ;;
d)  # carrying [".whl"]: why a 1M forward in unaligned segments took 4.82 s (gpu22a): 256K tokens
    # from a state at 262144 and at 367616, and from 0 (debug_gdn_forward.py from_state). Measured:
    # calls 122 / 81 / 70 / 82 ms (aligned), 78 / 90 / 73 / 73 (unaligned), 34 / 31 / 31 / 30 (from 0,
    # the prefix scan): no unaligned slowdown at 256K; from a state the bucket scan's two launches
    # take 55 - 59 ms of it against the prefix scan's 15.7.
    t=$(cap 300)
    ours timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 from_state > $OUT/from_state.log 2>&1
    note "from_state: rc $? (${SECONDS} s)"; grep "^ok\|^FAIL\|from state\|Error" $OUT/from_state.log | cut -c1-900 | tee -a $OUT/summary.log ;;
e)  # carrying [".whl"], after d: the bucket scan (rows from a state, the backward's recomputation)
    # at 4 warps, never timed since its state became two key tiles: from_state with the scan's
    # stages x value tile x warps forced (2x64x8 is the default), one process each. Measured (the
    # bucket scan's two launches per call, profiler, from 262144 / 367616): 2x64x8 54.7 / 52.4 ms,
    # 2x64x4 61.0 / 62.0, 3x64x4 56.9 / 75.0, 1x64x4 49.2 / 80.1; calls 62 - 130 ms after the first,
    # which compiles (2 - 5.5 s). Nothing taken.
    for tiles in 2x64x8 2x64x4 3x64x4 1x64x4; do
      t=$(cap 60); [ "$t" = 0 ] && break
      ours timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 $tiles from_state > $OUT/from_state_$tiles.log 2>&1
      note "from_state $tiles: rc $? (${SECONDS} s)"
      grep "^ok\|^FAIL\|from state\|Error" $OUT/from_state_$tiles.log | grep -v "state at 0 " | cut -c1-330 | tee -a $OUT/summary.log
    done ;;
f)  # carrying [".whl"]: the first profile of the GDN backward (gpu_notes: "No GDN backward
    # profile has been taken yet"), per kernel, fwd then fwd+bwd at 2K x 16 and 16K x 2. Measured
    # per fwd+bwd at 2K / 16K: level_scan_bwd_delta 11.86 / 20.40 ms, chunk_grad_delta 9.27 / 10.32,
    # state_pairs 6.03 / 8.77, level_scan_delta (the backward's recomputation, two launches) 2.19 /
    # 3.74, prefix scan 1.07 / 1.47, UT 0.41 x 2, output 0.57 / 0.80.
    t=$(cap 240)
    ours timeout $t python $B --variants gdn --profile 2048,16384 > $OUT/profile.log 2>&1
    note "profile: rc $? (${SECONDS} s)"; grep -A22 "profile gdn" $OUT/profile.log | cut -c1-200 | tee -a $OUT/summary.log ;;
g)  # carrying [".whl"], after f (per fwd+bwd at 2K x 16: reverse scan 11.9 ms, gradient kernel 9.3,
    # state pairs 6.0, recomputed bucket scan 2.2, of 32.3; at 16K x 2: 20.4, 10.3, 8.8, 3.7 of 46):
    # the backward kernels' launch options per launch (debug_gdn_backward.py sweep, each checked
    # against float64 first), at 2K x 16 and 16K x 2. Measured (fwd+bwd total, 2K / 16K): default
    # 32.28 / 46.20 ms; state_pairs at 8 warps 34.98 / 50.17, value tiles of 32 32.50 / 46.75, of 128
    # 31.62 / 45.30 (that launch 5.99 -> 5.35, 8.68 -> 7.76: taken); reverse scan at 4 warps 33.86 /
    # 47.55; gradient kernel at 4 warps 34.74 / 49.53. Every check passed (bf16 <= 4.3e-3).
    export SPLIT_LENGTHS=2048,16384
    t=$(cap 420)
    ours timeout $t python benchmarks/debug_gdn_backward.py 192 384 bfloat16 sweep default \
      state_pairs_kernel:num_warps=8 state_pairs_kernel:BV=32 state_pairs_kernel:BV=128 \
      level_scan_bwd_delta_kernel:num_warps=4 chunk_grad_delta_kernel:num_warps=4 > $OUT/bwd_sweep.log 2>&1
    note "bwd sweep: rc $? (${SECONDS} s)"; grep "^check\|split\|FAIL" $OUT/bwd_sweep.log | cut -c1-500 | tee -a $OUT/summary.log ;;
h)  # carrying [".whl"], after g: state_pairs at value tiles of 128 by default now; around it: 1 and
    # 2 stages, value tiles of 256, 8 warps at 128. Measured (2K / 16K): default 31.64 / 45.61 ms (that
    # launch 5.354 / 7.763); 1 or 2 stages the same; 256 44.24 / 63.67; 8 warps 32.71 / 46.90.
    export SPLIT_LENGTHS=2048,16384
    t=$(cap 300)
    ours timeout $t python benchmarks/debug_gdn_backward.py 192 384 bfloat16 sweep default \
      state_pairs_kernel:num_stages=1 state_pairs_kernel:num_stages=2 state_pairs_kernel:BV=256 \
      state_pairs_kernel:num_warps=8 > $OUT/bwd_sweep.log 2>&1
    note "bwd sweep: rc $? (${SECONDS} s)"; grep "^check\|split\|FAIL" $OUT/bwd_sweep.log | cut -c1-500 | tee -a $OUT/summary.log ;;
i)  # carrying [".whl"], after h: the reverse scan at value tiles of 32 (8 and 4 warps; 16 so far, for
    # shared memory at one stage) and the gradient kernel at one stage. Measured (fwd+bwd 2K / 16K):
    # default 31.65 / 45.55 ms; reverse scan at 32 28.14 / 39.63 (that launch 12.00 -> 8.49, 20.65 ->
    # 14.94), at 32 with 4 warps 34.89 / 49.16; gradient kernel at one stage 30.59 / 44.26 (9.41 ->
    # 8.38, 10.46 -> 9.43). Both taken (32 for half operands only: fp32 untimed).
    export SPLIT_LENGTHS=2048,16384
    t=$(cap 300)
    ours timeout $t python benchmarks/debug_gdn_backward.py 192 384 bfloat16 sweep default \
      level_scan_bwd_delta_kernel:BV=32 level_scan_bwd_delta_kernel:BV=32,num_warps=4 \
      chunk_grad_delta_kernel:num_stages=1 > $OUT/bwd_sweep.log 2>&1
    note "bwd sweep: rc $? (${SECONDS} s)"; grep "^check\|split\|FAIL" $OUT/bwd_sweep.log | cut -c1-500 | tee -a $OUT/summary.log ;;
j)  # carrying [".whl"], after i (reverse scan at value tiles of 32, gradient kernel at one stage, by
    # default now): the bf16 GDN checks of the Triton backward (dense, packed, segments), the reverse
    # scan at 64 beside the default, then the GDN table with fwd+bwd at 2K .. 64K in one run.
    # Measured: checks as before (dense o 3.9e-3, packed 5.7e-3, segments 5.7e-3 / 4.9e-3, every
    # gradient <= 5.2e-3); fwd+bwd 26.84 / 38.31 ms at 2K / 16K (reverse scan at 64: 32.12 / 46.80);
    # table: fwd 2.065 / 2.478 / 2.695 / 2.847 / 6.213 ms, fla 0.881 / 1.100 / 1.112 / 1.687 / 3.332;
    # fwd+bwd 26.91 / 34.76 / 38.57 / 43.85 / 97.35, num_levels=1 15.10 / 16.41 / 17.42 / 18.93 / 37.92.
    t=$(cap 120)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 \
      --gdn-checks dense,packed,segments > $OUT/checks.log 2>&1
    note "checks: rc $? (${SECONDS} s)"; grep "^check\|FAIL" $OUT/checks.log | tee -a $OUT/summary.log
    grep -q "FAIL" $OUT/checks.log && exit 1
    export SPLIT_LENGTHS=2048,16384
    t=$(cap 120)
    ours timeout $t python benchmarks/debug_gdn_backward.py 192 384 bfloat16 sweep default \
      level_scan_bwd_delta_kernel:BV=64 > $OUT/bwd_sweep.log 2>&1
    note "bwd sweep: rc $? (${SECONDS} s)"; grep "^check\|split\|FAIL" $OUT/bwd_sweep.log | cut -c1-500 | tee -a $OUT/summary.log
    t=$(cap 260); mkdir -p $OUT/tables
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192,16384,32768,65536 \
      --out $OUT/tables > $OUT/gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "^  (" $OUT/gdn_timing.log | tee -a $OUT/summary.log ;;
k)  # carrying [".whl"]: both debug scripts after their per-launch timing moved into launches.py
    # (per_launch): a forward and a fwd+bwd split at 2K, checked first. Measured: both ran (checks
    # pass; fwd 2.10 ms, fwd+bwd 27.05 ms at 2K x 16).
    export SPLIT_LENGTHS=2048
    sweep fwd /tmp/pkg 120 default
    t=$(cap 120)
    ours timeout $t python benchmarks/debug_gdn_backward.py 192 384 bfloat16 sweep default > $OUT/bwd_sweep.log 2>&1
    note "bwd sweep: rc $? (${SECONDS} s)"; grep "^check\|split\|FAIL" $OUT/bwd_sweep.log | cut -c1-500 | tee -a $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session23.sh a|b|c|d|e|f|g|h|i|j|k" >&2; exit 2 ;;
esac
