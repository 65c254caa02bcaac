# Session 19: where main's Gated DeltaNet time goes after session 18 (prefix scan, padded k / W),
# before changing anything. Run from the repository root carrying [".whl"]:
#   bash benchmarks/gpu_session19.sh a
# a: (1) the GDN timing table at 2K / 8K (fwd, fwd+bwd, num_levels=1, fla, SDPA; the cold
#        machine's first process compiles fla's anchors): fwd+bwd was not re-timed after the
#        padded k / W;
#    (2) torch.profiler per kernel: GDN fwd, then fwd+bwd, at 2K and 8K (no GDN backward profile
#        exists yet);
#    (3) the forward's launches one by one (debug_gdn_forward.py split: the prefix scan's
#        recurrence and boundary launches share a kernel name in the profiler);
#    (4) the prefix scan at value tiles of 16 (2 and 4 warps, two stages), checked and timed.
source benchmarks/gpu_lib.sh
case "$1" in
a)
    mkdir -p $OUT/tables; t=$(cap 240)
    ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/tables > $OUT/gdn_timing.log 2>&1
    note "timing: rc $? (${SECONDS} s)"; grep "ours\|fla" $OUT/gdn_timing.log | tee -a $OUT/summary.log
    t=$(cap 120)
    ours timeout $t python $B --variants gdn --profile 2048,8192 > $OUT/gdn_profile.log 2>&1
    note "profile: rc $? (${SECONDS} s)"; grep "profile\|kernel\|elementwise\|Memcpy\|Memset" $OUT/gdn_profile.log | cut -c1-70,150-200 | tee -a $OUT/summary.log
    t=$(cap 60)
    ours timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 split > $OUT/gdn_split.log 2>&1
    note "split: rc $? (${SECONDS} s)"; grep "^ok\|^FAIL\|split" $OUT/gdn_split.log | tee -a $OUT/summary.log
    timed main_2x16x2 /tmp/pkg 60 2x16x2
    timed main_2x16x4 /tmp/pkg 60 2x16x4
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session19.sh a" >&2; exit 2 ;;
esac
