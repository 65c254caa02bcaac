# Session 17: the Gated DeltaNet forward on prefix states (branch gdn-prefix,
# scan_triton.prefix_scan_delta_kernel: the plain recurrence, then each boundary pushed to its
# readers; 80 pushes a row at 2K where main's bucket scan takes 130). Never run on a GPU.
# Run from a checkout of the branch (.ab_prefix), beside .ab_main (git archive of main), carrying
# [".whl", ".ab_prefix", ".ab_main"]:
#   cd .ab_prefix && ln -sfn ../.whl .whl && bash benchmarks/gpu_session17.sh a
# b: see below (after the merge, from main: .ab_main2).
# a: (1) fault check (debug_gdn_forward.py bf16 192 / 384, launches blocking);
#    (2) main, then the branch, each checked and timed in its own process (ours, ours L=1, fla at
#        2K / 8K; main first: it compiles fla's anchors, ~200 s);
#    (3) the branch's bf16 GDN checks (forward and every gradient: dense, packed, initial state,
#        varlen; the first two run the prefix forward);
#    (4) the branch's GDN timing table (fwd, fwd+bwd, L=1, fla, SDPA at 2K and 8K) and profile at 2K;
#    beside them: the branch's fp32 and fp16 forwards at 192 / 384 and bf16 at other head sizes.
source benchmarks/gpu_lib.sh
case "$1" in
a)
    fault_check prefix
    ( for args in "192 384 float32" "192 384 float16" "64 64 bfloat16" "128 256 bfloat16" "256 512 bfloat16" "100 200 bfloat16"; do
        timeout 150 env PYTHONPATH=/tmp/pkg:/tmp/site python benchmarks/debug_gdn_forward.py $args >> $OUT/side.log 2>&1
      done ) &
    [ -d ../.ab_main ] && { pkg /tmp/pkgmain ../.ab_main; timed main_time /tmp/pkgmain 220; }
    timed prefix_time /tmp/pkg 100
    t=$(cap 120)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 > $OUT/prefix_gdn_checks.log 2>&1
    note "bf16 checks: rc $? $(grep -c "^check" $OUT/prefix_gdn_checks.log) lines, $(grep -c "FAIL" $OUT/prefix_gdn_checks.log) FAIL (${SECONDS} s)"
    grep "^check" $OUT/prefix_gdn_checks.log | tee -a $OUT/summary.log
    t=$(cap 60)
    ours timeout $t python $B --variants gdn --profile 2048 > $OUT/prefix_gdn_profile.log 2>&1
    note "profile: rc $? (${SECONDS} s)"; grep "kernel" $OUT/prefix_gdn_profile.log | head -8 | cut -c1-60,150-200 | tee -a $OUT/summary.log
    mkdir -p $OUT/tables; t=$(cap 200)
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/tables > $OUT/prefix_gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "ours\|fla" $OUT/prefix_gdn_timing.log | tee -a $OUT/summary.log
    wait; grep -v "^\s" $OUT/side.log | cut -c1-200 | tee -a $OUT/summary.log
    cat $OUT/summary.log ;;
b)
    # main after the merge (prefix states also behind the final state): the checks call a could
    # not finish, side by side on the CPU's compiles: fp32 forward and final state at 192 / 384
    # (its compile passed call a's 150 s), the fp32 dense GDN check with every gradient; then the
    # bf16 / fp16 forward and final state at 192 / 384 and the other head sizes.
    ( timeout 450 env PYTHONPATH=/tmp/pkg:/tmp/site python benchmarks/debug_gdn_forward.py 192 384 float32 > $OUT/fp32_forward.log 2>&1
      echo "fp32 forward: rc $?" >> $OUT/side.log ) &
    ( timeout 480 env PYTHONPATH=/tmp/pkg:/tmp/site python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 \
        --gdn-checks dense > $OUT/gdn_checks_fp32.log 2>&1; echo "fp32 dense check: rc $?" >> $OUT/side.log ) &
    for args in "192 384 bfloat16" "192 384 float16" "64 64 bfloat16" "128 256 bfloat16" "256 512 bfloat16" "100 200 bfloat16"; do
      t=$(cap 150); ours timeout $t python benchmarks/debug_gdn_forward.py $args >> $OUT/half.log 2>&1
    done
    note "$(grep "^ok\|^FAIL" $OUT/half.log)"
    wait; cat $OUT/side.log | tee -a $OUT/summary.log; grep "^ok\|^FAIL" $OUT/fp32_forward.log | tee -a $OUT/summary.log
    grep "^check" $OUT/gdn_checks_fp32.log | tee -a $OUT/summary.log
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session17.sh a|b" >&2; exit 2 ;;
esac
