# Session 20 (2026-12-01): where the Gated DeltaNet forward's chunk-parallel launches lose time.
# gpu_session19.sh a measured the readout inside the prefix scan (gdn-fused-readout) and the
# single launch (gdn-prefix-overlap) slower than main; what is left to tune without a new
# algorithm is the UT factors (0.55 ms at 2K, 255 registers and a spill at 4 warps offline) and
# the output kernel (0.82 ms).
# a: run from main beside `.ab_loops` (git archive of gdn-ut-loops: the UT kernel's key and
#    value loops not unrolled), carrying [".whl", ".ab_loops"]:
#    (1) main's split at 2K / 8K and fla's forward per kernel (fla compiles here: 200 s);
#    (2) main's sweep of the UT and output kernels' launch options (debug_gdn_forward.py sweep:
#        each checked against float64, then split);
#    (3) gdn-ut-loops' sweep (default, 8 warps). The script looked for it at ../.ab_loops, so
#        this step did not run.
# b: run from main beside `.ab_split` (git archive of gdn-ut-split: the UT factors in two
#    launches, the output kernel at 4 warps), carrying [".whl", ".ab_split"]:
#      printf '/.ab_split/\n' >> .git/info/exclude
#      rm -rf .ab_split && mkdir .ab_split && git archive gdn-ut-split | tar -x -C .ab_split
#    (1) main's output-kernel combinations at 4 warps (value tiles of 128, one or two stages);
#    (2) gdn-ut-split's sweep: default, each UT launch at 8 warps, U at value tiles of 128, the
#        output kernel back at 8 warps; then its fault check, launches blocking.
# c: run from main with the output kernel's tiles of 128 at 4 warps (prefix path, half operands)
#    merged, carrying [".whl"]: (1) its fault check, launches blocking; (2) a sweep around the
#    new tiles (256, 8 warps, two stages); (3) the GDN table (fwd, fwd+bwd, L=1, fla, SDPA at 2K
#    / 8K); (4) the bf16 GDN checks (forward and every gradient); (5) timing nothing: fp32, fp16
#    and other head sizes' forwards.
source benchmarks/gpu_lib.sh
case "$1" in
a)
    t=$(cap 240)
    ours timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 split > $OUT/main_split.log 2>&1
    note "main split: rc $? (${SECONDS} s)"; grep "split\|^ok\|^FAIL" $OUT/main_split.log | tee -a $OUT/summary.log
    sweep main /tmp/pkg 240 default \
      ut_factors_kernel:num_warps=8 ut_factors_kernel:num_stages=1 ut_factors_kernel:BV=128 ut_factors_kernel:BKT=128 \
      chunk_output_kernel:num_warps=4 chunk_output_kernel:num_stages=2 chunk_output_kernel:BV=128 \
      chunk_output_kernel:BV=32 chunk_output_kernel:BV=32,num_warps=4 default
    pkg /tmp/pkgloops ../.ab_loops; sweep loops /tmp/pkgloops 120 default ut_factors_kernel:num_warps=8 ;;
b)
    sweep main /tmp/pkg 150 default chunk_output_kernel:num_warps=4 chunk_output_kernel:num_warps=4,BV=128 \
      chunk_output_kernel:num_warps=4,num_stages=1 chunk_output_kernel:num_warps=4,num_stages=2
    pkg /tmp/pkgsplit .ab_split
    sweep split /tmp/pkgsplit 200 default ut_inverse_kernel:num_warps=8 ut_apply_kernel:num_warps=8 ut_apply_kernel:BV=128 \
      chunk_output_kernel:num_warps=8 ut_inverse_kernel:num_stages=1 default
    t=$(cap 100)
    PYTHONPATH=/tmp/pkgsplit:/tmp/site CUDA_LAUNCH_BLOCKING=1 timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 > $OUT/split_fault_check.log 2>&1
    note "split fault check: rc $? $(grep "^ok\|^FAIL" $OUT/split_fault_check.log | head -1)" ;;
c)
    fault_check main
    sweep main /tmp/pkg 120 default chunk_output_kernel:BV=256 chunk_output_kernel:num_warps=8 chunk_output_kernel:num_stages=2
    gdn_table 240
    gdn_checks 120 bfloat16
    forward_checks 60 "192 384 float32" "192 384 float16" "64 64 bfloat16" "128 256 bfloat16" "256 512 bfloat16" \
      "100 200 bfloat16" ;;
d)  # from main beside `.ab_half` (git archive of gdn-ut-half: the UT kernel's products that
    # apply Ab and QK on half operands), carrying [".whl", ".ab_half"]: main's and its sweep
    # (default; 8 warps), then its fault check and bf16 GDN checks (forward and every gradient)
    sweep main /tmp/pkg 90 default
    pkg /tmp/pkghalf .ab_half; sweep half /tmp/pkghalf 120 default ut_factors_kernel:num_warps=8 default
    t=$(cap 100)
    PYTHONPATH=/tmp/pkghalf:/tmp/site CUDA_LAUNCH_BLOCKING=1 timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 > $OUT/half_fault_check.log 2>&1
    note "half fault check: rc $? $(grep "^ok\|^FAIL" $OUT/half_fault_check.log | head -1)"
    t=$(cap 200)
    PYTHONPATH=/tmp/pkghalf:/tmp/site timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 > $OUT/half_gdn_checks.log 2>&1
    note "half bf16 checks: rc $? $(grep -c "^check" $OUT/half_gdn_checks.log) lines, $(grep -c "FAIL" $OUT/half_gdn_checks.log) FAIL (${SECONDS} s)"
    grep "^check" $OUT/half_gdn_checks.log | tee -a $OUT/summary.log
    for args in "192 384 float16" "64 64 bfloat16" "256 512 bfloat16" "100 200 bfloat16"; do
      t=$(cap 40); [ "$t" = 0 ] && break
      PYTHONPATH=/tmp/pkghalf:/tmp/site timeout $t python benchmarks/debug_gdn_forward.py $args >> $OUT/half_side.log 2>&1
    done
    grep "^ok\|^FAIL" $OUT/half_side.log | cut -c1-200 | tee -a $OUT/summary.log ;;
e)  # from main after merging gdn-ut-half, carrying [".whl"]: the GDN table (fwd, fwd+bwd, L=1,
    # fla, SDPA at 2K / 8K) in one run, nothing else (the session's last 300 s of device time)
    gdn_table 250 ;;
*)  echo "usage: bash benchmarks/gpu_session20.sh a|b|c|d|e" >&2; exit 2 ;;
esac
