# Session 16: the Gated DeltaNet bucket scan with its buckets' loads prefetched (branch
# gdn-scan-stages): chunk_triton._delta_scan_tiles gives the buckets' launch two pipeline stages
# (their two loops prefetch W, k and U; sm_90 offline at 192 / 384 in bf16: 176 KB of shared
# memory, 255 registers, 80 - 104 B of stack) while the top keeps one (its four loops would take
# 273 KB). Main runs both at one stage (4.61 ms at 2K, gpu_session15 b). Never run on a GPU.
# Run from a checkout of the branch (.ab_stages), beside .ab_main (git archive of main), carrying
# [".whl", ".ab_stages", ".ab_main"]:
#   cd .ab_stages && ln -sfn ../.whl .whl && bash benchmarks/gpu_session16.sh a
# a: (1) fault check of the branch (debug_gdn_forward.py bf16 192 / 384, launches blocking);
#    (2) main, then the branch, each checked and timed in its own process (debug_gdn_forward.py
#        time: ours, ours L=1, fla at 2K / 8K; main first: it compiles fla's anchors, 200 s);
#    (3) the branch's bf16 GDN checks (forward and backward: dense, packed, initial state, varlen);
#    (4) the branch at 4 warps, two stages (the buckets), checked and timed;
#    beside them: the branch's fp32 dense GDN check with every gradient, and its fp16 forward.
source benchmarks/gpu_lib.sh
case "$1" in
a)
    fault_check stages
    # beside the rest (compiling on the CPU): the fp32 dense GDN check with every gradient (~200 -
    # 400 s of compiling), then the fp16 forward at 192 / 384 (fp16 operands: not yet run on a GPU)
    ( timeout 450 env PYTHONPATH=/tmp/pkg:/tmp/site python benchmarks/bench_kernels.py --variants gdn --skip-decode \
        --lengths '' --check-dtypes float32 --gdn-checks dense > $OUT/stages_gdn_checks_fp32.log 2>&1
      echo "fp32 dense check: rc $?" >> $OUT/side.log ) &
    ( timeout 150 env PYTHONPATH=/tmp/pkg:/tmp/site python benchmarks/debug_gdn_forward.py 192 384 float16 >> $OUT/side.log 2>&1 ) &
    [ -d ../.ab_main ] && { pkg /tmp/pkgmain ../.ab_main; timed main_time /tmp/pkgmain 220; }
    timed stages_time /tmp/pkg 120
    t=$(cap 150)
    ours timeout $t python benchmarks/bench_kernels.py --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 > $OUT/stages_gdn_checks.log 2>&1
    note "bf16 checks: rc $? $(grep -c "^check" $OUT/stages_gdn_checks.log) lines, $(grep -c "FAIL" $OUT/stages_gdn_checks.log) FAIL (${SECONDS} s)"
    grep "^check" $OUT/stages_gdn_checks.log | tee -a $OUT/summary.log
    timed stages_2x64x4 /tmp/pkg 120 2x64x4
    wait; grep -v "^\s" $OUT/side.log | cut -c1-200 | tee -a $OUT/summary.log
    grep "^check" $OUT/stages_gdn_checks_fp32.log | tee -a $OUT/summary.log
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session16.sh a" >&2; exit 2 ;;
esac
