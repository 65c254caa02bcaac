# Session 8 of 2026-11-30: the final tables after merging m2-readout-top (with m2-readout-in-scan)
# and gdn-top-empty, both checked on the H200 by gpu_session9.sh a / c. Set-up here, before `b`:
#   rm -rf .ab_m2-readout-in-scan && mkdir .ab_m2-readout-in-scan && git archive m2-readout-in-scan kernels hf_loglinear | tar -x -C .ab_m2-readout-in-scan
# then carry [".whl", ".ab_m2-readout-in-scan"].
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
pkg /tmp/pkg .
[ -d .ab_m2-readout-in-scan ] && pkg /tmp/pkg_in_scan .ab_m2-readout-in-scan
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
B=benchmarks/bench_kernels.py
case "$1" in
a)  # GDN: times at 2K / 8K beside fla and the authors' forward, then the profile at 2K
    main timeout 200 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/gdn_timing.log | grep "^  (\|Error"
    main timeout 120 python $B --variants gdn --profile 2048 2>&1 | tee $OUT/gdn_profile.log | grep "kernel\|Self CUDA" ;;
b)  # Mamba-2: m2-readout-in-scan at 2K / 8K (what the top's shorter reverse walk adds), then main at
    # every T beside fla and SDPA, then 128K and 1M
    PYTHONPATH=/tmp/pkg_in_scan:/tmp/site timeout 150 python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/mamba2_in_scan_timing.log | grep "^  (\|Error"
    main timeout 380 python $B --variants mamba2 --skip-checks --skip-decode --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|long\|Error" ;;
c)  # after the Mamba-2 key split's removal (sm_90 offline: every kernel's registers, stack and
    # shared memory unchanged): the reverse level scan's warps / stages (its 8 warps predate the
    # readout's move into it; 4 never measured), each configuration checked first
    main timeout 400 python benchmarks/sweep_tiles.py m2bwd 2>&1 | tee $OUT/sweep_m2bwd.log | grep "^|" ;;
d)  # c's winner (4 warps, 2 stages: 6.24 against 6.41 ms at 2K) again among more options, and the
    # forward level scans' warps / stages
    for s in m2bwd m2fwd; do main timeout 250 python benchmarks/sweep_tiles.py $s 2>&1 | tee $OUT/sweep_$s.log | grep "^|"; done ;;
f)  # chunk_grad's pipeline stages (only its warps and value tile were swept before)
    main timeout 250 python benchmarks/sweep_tiles.py grad 2>&1 | tee $OUT/sweep_grad.log | grep "^|" ;;
e)  # the final Mamba-2 kernels (reverse scan at 4 warps / 2 stages for half operands): bf16 checks,
    # then every T beside fla and SDPA, then 128K and 1M
    main timeout 120 python $B --variants mamba2 --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/mamba2_checks.log | grep "check\|FAIL\|Error\|done"
    grep -q "CHECKS FAILED" $OUT/mamba2_checks.log && exit 1
    main timeout 200 python $B --variants mamba2 --skip-checks --skip-decode --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|long\|Error" ;;
*)  echo "usage: bash benchmarks/gpu_session10.sh a|b|c|d|e|f" >&2; exit 2 ;;
esac
