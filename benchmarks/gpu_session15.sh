# Session 15: the Gated DeltaNet forward level scan by buckets (branch gdn-scan-window):
# scan_triton.level_scan_delta_kernel as two launches side by side, the capped top (one program a
# row, head and value tile, window by window) and one program per bucket of every level below it,
# each walk a loop with no branch inside, on k and W zero-padded to the key tile (the padded form
# ran on the H200 in session 14: no fault, 5.68 -> 5.18 ms at 2K).
# Call a ran the first tiles (value tiles of 32, 4 warps, one stage; sm_90 offline 80 KB shared,
# 254 - 255 registers): wrong outputs on the GPU, then the sweep below; 64 x 8 warps won and is
# the default call b ran with (gpu_notes.md, version 11).
# Run from a checkout of the branch (here: .ab_window, beside .ab_padded holding gdn-scan-padded),
# carrying [".whl", ".ab_window", ".ab_padded"]:
#   cd .ab_window && ln -sfn ../.whl .whl && bash benchmarks/gpu_session15.sh a
#   ... bash benchmarks/gpu_session15.sh b     (after a: the chosen tiles' checks, tables, profile)
# a: (1) fault check of the bucket scan (debug_gdn_forward.py bf16 192 / 384, launches blocking);
#    (2) session 14's padded form timed (debug_gdn_forward.py time: ours, ours L=1, fla at 2K / 8K;
#        first, so that it compiles fla's anchors: 200 s);
#    (3) the bucket scan at each (stages x value tile x warps), each checked and timed the same way.
# b: bf16 GDN checks (forward and backward), the GDN timing table at 2K / 8K with fwd+bwd, the GDN
#    forward profile at 2K; beside them the fp32 dense GDN check (about 200 s of compiling) and the
#    bf16 forward at K / V = 64 / 64, 128 / 256, 256 / 512 and 100 / 200.
source benchmarks/gpu_lib.sh
case "$1" in
a)
    fault_check window
    if [ -d ../.ab_padded ]; then
      pkg /tmp/pkgpad ../.ab_padded; t=$(cap 220)
      HF_LOGLINEAR_GDN_SCAN=padded PYTHONPATH=/tmp/pkgpad:/tmp/site timeout $t python ../.ab_padded/benchmarks/debug_gdn_forward.py 192 384 bfloat16 time \
        > $OUT/padded_time.log 2>&1
      note "padded (session 14): rc $? (${SECONDS} s)"; grep "^gdn fwd" $OUT/padded_time.log | sed "s/^/  /" | tee -a $OUT/summary.log
    fi
    for cfg in 1x32x4 1x32x8 1x16x4 1x64x8 2x32x4 1x64x4 1x16x2; do
      t=$(cap 120); [ "$t" = 0 ] && { note "window $cfg: not run (time)"; continue; }
      ours timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 $cfg time > $OUT/window_$cfg.log 2>&1; rc=$?
      note "window $cfg: rc $rc $(grep "^ok\|^FAIL" $OUT/window_$cfg.log | head -1) (${SECONDS} s)"
      grep "^gdn fwd" $OUT/window_$cfg.log | sed "s/^/  /" | tee -a $OUT/summary.log
      [ $rc = 0 ] || [ $rc = 124 ] || tail -5 $OUT/window_$cfg.log
    done
    cat $OUT/summary.log ;;
b)
    # beside the rest: the fp32 dense check (compiles ~200 s on the CPU), and the forward at other head sizes
    ( timeout 400 env PYTHONPATH=/tmp/pkg:/tmp/site python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 \
        --gdn-checks dense > $OUT/window_gdn_checks_fp32.log 2>&1; echo "fp32 dense check: rc $?" >> $OUT/side.log ) &
    ( for kv in "64 64" "128 256" "256 512" "100 200"; do
        timeout 90 env PYTHONPATH=/tmp/pkg:/tmp/site python benchmarks/debug_gdn_forward.py $kv bfloat16 >> $OUT/side.log 2>&1
      done ) &
    t=$(cap 150)
    ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 > $OUT/window_gdn_checks.log 2>&1
    note "bf16 checks: rc $? $(grep -c "^check" $OUT/window_gdn_checks.log) lines, $(grep -c "FAIL" $OUT/window_gdn_checks.log) FAIL (${SECONDS} s)"
    grep "^check" $OUT/window_gdn_checks.log | tee -a $OUT/summary.log
    mkdir -p $OUT/tables; t=$(cap 200)
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/tables > $OUT/window_gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "ours\|fla" $OUT/window_gdn_timing.log | grep "fwd" | tee -a $OUT/summary.log
    t=$(cap 90)
    ours timeout $t python $B --variants gdn --profile 2048 > $OUT/window_gdn_profile.log 2>&1
    note "profile: rc $? (${SECONDS} s)"; grep "kernel" $OUT/window_gdn_profile.log | head -8 | cut -c1-60,150-200 | tee -a $OUT/summary.log
    wait; cat $OUT/side.log | grep -v "^\s" | cut -c1-200 | tee -a $OUT/summary.log
    grep "^check" $OUT/window_gdn_checks_fp32.log | tee -a $OUT/summary.log
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session15.sh a|b" >&2; exit 2 ;;
esac
