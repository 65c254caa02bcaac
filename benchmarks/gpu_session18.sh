# Session 18: the delta rule's k and W padded by ut_factors_kernel (branch gdn-ut-pad): no
# `_pad_keys` torch copies (~0.25 ms of main's 3.14 ms forward at 2K); the backward reads W at
# the padded stride. Never run on a GPU.
# Run from a checkout of the branch (.ab_utpad), beside .ab_main (git archive of main), carrying
# [".whl", ".ab_utpad", ".ab_main"]:
#   cd .ab_utpad && ln -sfn ../.whl .whl && bash benchmarks/gpu_session18.sh a
# a: (1) fault check (debug_gdn_forward.py bf16 192 / 384, launches blocking);
#    (2) main, then the branch, each checked and timed in its own process (main first: it
#        compiles fla's anchors);
#    (3) the branch with value tiles of 32 in the scans (4 and 8 warps, two stages): checked (the
#        bucket scan's 32-wide tiles were miscompiled by triton 3.6) and timed;
#    (4) the branch's bf16 GDN checks (forward and every gradient), then, with what time is left,
#        its fp32 dense check (nothing runs beside the timings).
source benchmarks/gpu_lib.sh
case "$1" in
a)
    fault_check utpad
    [ -d ../.ab_main ] && { pkg /tmp/pkgmain ../.ab_main; timed main_time /tmp/pkgmain 200; }
    timed utpad_time /tmp/pkg 60
    timed utpad_2x32x4 /tmp/pkg 60 2x32x4
    timed utpad_2x32x8 /tmp/pkg 60 2x32x8
    t=$(cap 100)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 > $OUT/utpad_gdn_checks.log 2>&1
    note "bf16 checks: rc $? $(grep -c "^check" $OUT/utpad_gdn_checks.log) lines, $(grep -c "FAIL" $OUT/utpad_gdn_checks.log) FAIL (${SECONDS} s)"
    grep "^check" $OUT/utpad_gdn_checks.log | tee -a $OUT/summary.log
    t=$(cap 300)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 --gdn-checks dense > $OUT/utpad_gdn_checks_fp32.log 2>&1
    note "fp32 dense check: rc $? (${SECONDS} s)"; grep "^check" $OUT/utpad_gdn_checks_fp32.log | tee -a $OUT/summary.log
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session18.sh a" >&2; exit 2 ;;
esac
