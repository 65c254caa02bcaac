# Session 7 of 2026-11-30's device calls (gpu_notes.md, version 8). Carry [".whl"].
# a: the Mamba-2 bf16 checks with chunk_grad at 4 warps (session 7's sweep), then per-kernel
#    profiles of a Mamba-2 fwd+bwd at 2K with q/k shared by all 48 heads (dq / dk added
#    atomically) and with q/k per head (stored): how much of the backward the atomics cost.
#    Result: none (chunk_grad 2.88 ms shared, 3.77 ms per head: the per-head q/k reads cost more).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg && cp -r hf_loglinear /tmp/pkg/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
B=benchmarks/bench_kernels.py
case "$1" in
a)  main timeout 200 python $B --variants mamba2 --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/m2_checks.log | grep "check\|FAIL\|Error\|done"
    for g in 1 48; do
      main timeout 150 python $B --variants mamba2 --profile 2048 --mamba2-groups $g 2>&1 | tee $OUT/m2_profile_g$g.log | grep -v "^-" | head -22
    done ;;
b)  # the GDN level scan's tiles after the skips (session 4's sweep chose BV 32, 2 stages, 8 warps);
    # run twice, the second time with the list now in sweep_tiles.py: BV 64, 1 stage, 8 warps won
    main timeout 400 python benchmarks/sweep_tiles.py scan 2>&1 | tee $OUT/sweep_scan.log | grep "^|" ;;
c)  # the final tables: GDN (value tiles of 64 in its level scan, call b) bf16 checks, times at 2K / 8K
    # and profile; Mamba-2 (chunk_grad at 4 warps) every T beside fla and SDPA, then 128K and 1M
    main timeout 150 python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error\|done"
    main timeout 150 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/gdn_timing.log | grep "^  (\|Error"
    main timeout 100 python $B --variants gdn --profile 2048 2>&1 | tee $OUT/gdn_profile.log | grep "kernel\|Self CUDA"
    main timeout 330 python $B --variants mamba2 --skip-checks --skip-decode --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|long\|Error" ;;
d)  # the fp32 GDN checks (dense, packed, initial state, varlen) at 192 / 384: never run on a GPU
    # before (the fp32 kernels take ~210 s to compile there)
    main timeout 450 python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 2>&1 | tee $OUT/gdn_checks_fp32.log | grep "check\|FAIL\|Error\|done" ;;
*)  echo "usage: bash benchmarks/gpu_session8.sh a|b|c|d" >&2; exit 2 ;;
esac
