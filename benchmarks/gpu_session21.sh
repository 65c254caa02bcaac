# Session 21 (2026-12-01): the delta rule's scans with their state in two key tiles
# (scan_triton.key_split: K = 192 as 128 + 64 rather than one 256-wide tile, a quarter of it
# padding) and W / k stored 192 wide (no padded copy of k).
# a: run from gdn-key-split beside `.ab_main` (git archive of main), carrying [".whl", ".ab_main"]:
#      printf '/.ab_main/\n' >> .git/info/exclude
#      rm -rf .ab_main && mkdir .ab_main && git archive main | tar -x -C .ab_main
#    (1) the branch's fault check, launches blocking; (2) main's and the branch's split at 2K / 8K
#    (debug_gdn_forward.py sweep: each config checked against float64 first), the branch also
#    with the prefix scan at 4 warps and at three stages; (3) the branch's bf16 GDN checks (forward
#    and every gradient) and fp32 ones (timed out after the first line); (4) its forward check at
#    other head sizes and dtypes.
source benchmarks/gpu_lib.sh
case "$1" in
a)
    fault_check split
    pkg /tmp/pkgmain .ab_main
    sweep main /tmp/pkgmain 100 default
    sweep split /tmp/pkg 160 default prefix_scan_delta_kernel:num_warps=4 prefix_scan_delta_kernel:num_stages=3 default
    gdn_checks 150 bfloat16,float32
    forward_checks 40 "192 384 float16" "64 64 bfloat16" "128 256 bfloat16" "256 512 bfloat16" "100 200 bfloat16" \
      "160 160 bfloat16" ;;
b)  # from gdn-key-split, carrying [".whl"]: the prefix scan's launch options per launch (a
    # measured 8 warps / 2 stages 0.604 + 0.818 ms at 2K; 4 warps 0.516 + 0.718; three stages
    # 0.437 + 0.812), then the bf16 GDN checks alone (fp32 beside them ran out of time in a) and
    # the fp32 forward check
    P=prefix_scan_delta_kernel
    sweep split /tmp/pkg 260 default "$P/BOUNDARIES=0:num_stages=3+$P/BOUNDARIES=1:num_warps=4" \
      "$P:num_warps=4,num_stages=3" "$P/BOUNDARIES=0:num_stages=4+$P/BOUNDARIES=1:num_warps=4,num_stages=1" \
      "$P/BOUNDARIES=0:num_warps=4,num_stages=4+$P/BOUNDARIES=1:num_warps=2" default
    gdn_checks 160 bfloat16
    forward_checks 60 "192 384 float32" ;;
c)  # from gdn-key-split with _prefix_scan_tiles (4 warps; 3 stages for the recurrence, 2 for the
    # boundaries), carrying [".whl"]: its fault check, launches blocking; the GDN table (fwd,
    # fwd+bwd, L=1, fla, SDPA at 2K / 8K) in one run; the fp32 forward check (b's timed out at
    # 60 s); forward checks at other head sizes
    fault_check split
    gdn_table 260
    forward_checks 120 "192 384 float32" "256 512 bfloat16" "64 64 bfloat16" "100 200 bfloat16" "128 256 float16" ;;
d)  # carrying [".whl"]: the fp32 checks, which c's 120 s did not fit (their IEEE-fp32 kernels
    # spill and compile for minutes: session 17 gave them 450 s), side by side: the forward at
    # 192 / 384 (prefix scan) and the dense forward and every gradient (the bucket scan)
    ( ours timeout 500 python benchmarks/debug_gdn_forward.py 192 384 float32 > $OUT/fp32_forward.log 2>&1
      note "fp32 forward: rc $? (${SECONDS} s)" ) &
    ( ours timeout 500 python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 --gdn-checks dense \
        > $OUT/fp32_checks.log 2>&1; note "fp32 dense check: rc $? (${SECONDS} s)" ) &
    wait
    grep -h "^ok\|^FAIL\|^check" $OUT/fp32_forward.log $OUT/fp32_checks.log | cut -c1-300 | tee -a $OUT/summary.log ;;
e)  # carrying nothing (the session's last 245 s): the forward without gradients in segments
    # (chunk_triton._segments, then named _forward_bounded): the check cut into 256-token segments, then 128K and 1M
    # tokens at B = 1, time and peak memory
    ours timeout 170 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 long > $OUT/long.log 2>&1
    note "long: rc $? (${SECONDS} s)"; grep "^ok\|^FAIL\|segments\|long" $OUT/long.log | tee -a $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session21.sh a|b|c|d|e" >&2; exit 2 ;;
esac
