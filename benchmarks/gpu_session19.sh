# Session 19 (written in session 12, which had no device time): the prefix scan's readout in the
# scan (branch gdn-fused-readout) and, on top of it, the prefix scan in one launch (branch
# gdn-prefix-overlap), beside main; and where main's time goes. Call a ran on 2026-12-01
# (`logs/gpu19a_*`): every branch slower than main, `parts` failed to compile; b did not run.
# - gdn-fused-readout: the boundaries read each prefix out into a [C, V] part (Qt padded to the
#   key tile) instead of recording a [K, V] state for the output kernel to read back; the
#   recurrence either records X(c, c) for the output kernel (default) or reads it out too (`parts`).
# - gdn-prefix-overlap: recurrences and boundaries in one launch, each boundary waiting for its
#   recurrence (flags with release / acquire; tasks numbered in start order): boundaries fill the
#   SMs the recurrence's last wave leaves idle. A hang is bounded (~10 s a waiting program), and
#   every process has a timeout.
# - gdn-prefix-memory (on top of overlap): the prefix state buffer linear in T ([N, NC + NJ, H,
#   K, V] instead of [N, NC * NJ, H, K, V]); same kernels otherwise.
# Run from a checkout of gdn-prefix-memory (it holds the other two: "overlap" below means this
# checkout), beside checkouts of gdn-fused-readout and main, carrying
# [".whl", ".ab_overlap", ".ab_fused", ".ab_main"]:
#   printf '/.ab_overlap/\n/.ab_fused/\n/.ab_main/\n' >> .git/info/exclude
#   for x in overlap:gdn-prefix-memory fused:gdn-fused-readout main:main; do
#     rm -rf .ab_${x%%:*}; mkdir .ab_${x%%:*}; git archive ${x#*:} | tar -x -C .ab_${x%%:*}; done
#   cd .ab_overlap && ln -sfn ../.whl .whl && bash benchmarks/gpu_session19.sh a
# a: (1) fault checks, launches blocking: overlap (default), and with `parts`;
#    (2) main, overlap, fused, overlap with `parts`, each checked and timed in its own process
#        (ours, ours L=1, fla at 2K / 8K; main first: it compiles fla's anchors, ~200 s);
#    (3) overlap's bf16 GDN checks (forward and every gradient: dense, packed, initial state,
#        varlen);
#    (4) with what time is left, each launch of main's and fused's forward timed alone
#        (debug_gdn_forward.py split: the recurrence and the boundaries apart).
# b: this checkout's GDN table (fwd, fwd+bwd, L=1, fla, SDPA at 2K / 8K) and profiles (fwd,
#    fwd+bwd at 2K); then, timing nothing, its fp32 dense check with every gradient (~200 s of
#    compiling) beside its fp32, fp16 and other head sizes' forwards. Run it from the checkout
#    that call a picks (after merging it, from main).
source benchmarks/gpu_lib.sh
case "$1" in
a)
    fault_check overlap
    t=$(cap 150)
    ours env CUDA_LAUNCH_BLOCKING=1 timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 parts > $OUT/parts_fault_check.log 2>&1
    note "parts fault check: rc $? $(grep "^ok\|^FAIL" $OUT/parts_fault_check.log | head -1) (${SECONDS} s)"
    [ -d ../.ab_main ] && { pkg /tmp/pkgmain ../.ab_main; timed main_time /tmp/pkgmain 220; }
    timed overlap_time /tmp/pkg 60
    [ -d ../.ab_fused ] && { pkg /tmp/pkgfused ../.ab_fused; timed fused_time /tmp/pkgfused 60; }
    timed overlap_parts_time /tmp/pkg 60 parts
    t=$(cap 150)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 > $OUT/overlap_gdn_checks.log 2>&1
    note "bf16 checks: rc $? $(grep -c "^check" $OUT/overlap_gdn_checks.log) lines, $(grep -c "FAIL" $OUT/overlap_gdn_checks.log) FAIL (${SECONDS} s)"
    grep "^check" $OUT/overlap_gdn_checks.log | tee -a $OUT/summary.log
    for label in main fused; do  # the recurrence and the boundaries apart (overlap has one launch)
      [ -d /tmp/pkg$label ] || continue
      t=$(cap 60); [ "$t" = 0 ] && break
      PYTHONPATH=/tmp/pkg$label:/tmp/site timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 split > $OUT/${label}_split.log 2>&1
      note "$label split: rc $?"; grep "split" $OUT/${label}_split.log | tee -a $OUT/summary.log
    done
    cat $OUT/summary.log ;;
b)
    mkdir -p $OUT/tables; t=$(cap 240)
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/tables > $OUT/gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "ours\|fla" $OUT/gdn_timing.log | tee -a $OUT/summary.log
    t=$(cap 120)
    ours timeout $t python $B --variants gdn --profile 2048 > $OUT/gdn_profile.log 2>&1
    note "profile: rc $? (${SECONDS} s)"; grep "profile\|kernel\|elementwise\|Memcpy\|Memset" $OUT/gdn_profile.log | cut -c1-70,150-200 | tee -a $OUT/summary.log
    # nothing is timed from here on: the compiles may share the CPU
    ( for args in "192 384 float32" "192 384 float16" "64 64 bfloat16" "128 256 bfloat16" "256 512 bfloat16" "100 200 bfloat16"; do
        timeout $(cap 200) env PYTHONPATH=/tmp/pkg:/tmp/site python benchmarks/debug_gdn_forward.py $args >> $OUT/side.log 2>&1
      done ) &
    t=$(cap 400)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 --gdn-checks dense > $OUT/gdn_checks_fp32.log 2>&1
    note "fp32 dense check: rc $? (${SECONDS} s)"; grep "^check" $OUT/gdn_checks_fp32.log | tee -a $OUT/summary.log
    wait; grep "^ok\|^FAIL" $OUT/side.log | cut -c1-200 | tee -a $OUT/summary.log
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session19.sh a|b" >&2; exit 2 ;;
esac
