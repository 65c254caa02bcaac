# The next session's first device call: the two branches session 5 wrote without device time
# (gdn-scan-kdt, m2-bwd-buckets; gpu_notes.md), each checked and timed beside main in one run.
# Here, before the call, put each branch's package files where the device copy will find them
# (the folders are listed in .git/info/exclude, so they travel only when carried):
#   for b in gdn-scan-kdt m2-bwd-buckets; do rm -rf .ab_$b && mkdir .ab_$b && git archive $b kernels hf_loglinear | tar -x -C .ab_$b; done
# then run `bash benchmarks/gpu_session6.sh a` with carry [".whl", ".ab_gdn-scan-kdt", ".ab_m2-bwd-buckets"].
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
pkg /tmp/pkg .
for b in gdn-scan-kdt m2-bwd-buckets kdt-regs kdt-masked; do [ -d .ab_$b ] && pkg /tmp/pkg_$b .ab_$b; done
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
on() { local b=$1; shift; PYTHONPATH=/tmp/pkg_$b:/tmp/site "$@"; }  # run with branch $b's package
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
B=benchmarks/bench_kernels.py
case "$1" in
a)  # GDN: the K-tiled scan reading Kd^T (fault check at 192 / 384 bf16, error, fwd times beside main and fla),
    # then its bf16 checks; Mamba-2: the atomics-free backward's checks and times beside main's (L = 15)
    CUDA_LAUNCH_BLOCKING=1 on gdn-scan-kdt timeout 90 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/kdt_fault.log | tail -3
    on gdn-scan-kdt timeout 80 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/kdt_forward.log | grep "ok\|FAIL\|Error\|gdn fwd"
    main timeout 80 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/main_gdn_forward.log | grep "ok\|FAIL\|Error\|gdn fwd"
    on gdn-scan-kdt timeout 120 python $B --variants gdn --quick --skip-decode --check-dtypes bfloat16 2>&1 | tee $OUT/kdt_checks.log | grep "check\|FAIL\|Error"
    on m2-bwd-buckets timeout 220 python $B --variants mamba2 --quick --skip-decode 2>&1 | tee $OUT/buckets_quick.log | grep "check\|FAIL\|Error\|^  ("
    main timeout 110 python $B --variants mamba2 --quick --skip-checks --skip-decode 2>&1 | tee $OUT/main_quick.log | grep "Error\|^  (" ;;
b)  # after call a (kdt faulted again, buckets merged into main): the GDN forward with triton's
    # Hopper wgmma off (DISABLE_MMA_V3=1: mma.sync, operands through registers) for kdt and main;
    # where kdt faults (compute-sanitizer); merged main's Mamba-2 at 8K / 32K and 128K / 1M
    DISABLE_MMA_V3=1 CUDA_LAUNCH_BLOCKING=1 on gdn-scan-kdt timeout 90 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/kdt_v2_fault.log | grep "ok\|FAIL\|Error"
    DISABLE_MMA_V3=1 on gdn-scan-kdt timeout 80 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/kdt_v2_forward.log | grep "ok\|FAIL\|Error\|gdn fwd"
    DISABLE_MMA_V3=1 main timeout 80 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/main_v2_forward.log | grep "ok\|FAIL\|Error\|gdn fwd"
    CUDA_LAUNCH_BLOCKING=1 on gdn-scan-kdt timeout 120 /usr/local/cuda/bin/compute-sanitizer --print-limit 2 \
      python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | grep -v "Host Frame" | tee $OUT/kdt_sanitizer.log | head -24
    main timeout 200 python $B --variants mamba2 --skip-checks --skip-decode --lengths 8192,32768 --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|long\|T=\|Error" ;;
c)  # call b: wgmma off is 19x slower everywhere, and kdt faults at the unmasked load of a W key tile
    # going to wgmma from shared memory. Two workarounds of kdt (folders .ab_kdt-regs: both loaded
    # tiles scaled by an exact run-time 1 so they reach wgmma from registers; .ab_kdt-masked: every
    # tile load masked): fault check, then times beside main's
    for b in kdt-regs kdt-masked; do
      CUDA_LAUNCH_BLOCKING=1 on $b timeout 90 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/${b}_fault.log | grep "ok\|FAIL\|Error"
      grep -q "^ok" $OUT/${b}_fault.log && on $b timeout 80 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/${b}_forward.log | grep "ok\|FAIL\|Error\|gdn fwd"
    done ;;
d)  # call c: kdt-masked faulted; kdt-regs ran (error 5.6e-3) but took 20.8 ms at 2K (main 10.7): the
    # K-tiled GDN scan is dropped. Main's Mamba-2 level scans now walk only their sources (forward,
    # below the top) / readers (reverse): checks and times (2K / 16K / 64K, L = 15; call a holds the
    # same for the code before), then the full table beside fla and SDPA with 128K and 1M alone
    main timeout 230 python $B --variants mamba2 --quick --skip-decode 2>&1 | tee $OUT/walk_quick.log | grep "check\|FAIL\|Error\|^  ("
    main timeout 330 python $B --variants mamba2 --skip-checks --skip-decode --long 131072,1048576 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "^  (\|long\|T=\|Error" ;;
e)  # call d's profile at 2K: chunk_grad 3.9 of 8.2 ms, much of it reading the per-sum gradients
    # (fp32, one per level a chunk adds to); now stored like the recorded states (bf16): bf16 checks,
    # times beside call d's, and the peaks at 128K / 1M
    main timeout 150 python $B --variants mamba2 --quick --skip-decode --check-dtypes bfloat16 2>&1 | tee $OUT/dsum16_quick.log | grep "check\|FAIL\|Error\|^  ("
    main timeout 100 python $B --variants mamba2 --skip-checks --skip-decode --lengths '' --long 131072,1048576 2>&1 | tee $OUT/dsum16_long.log | grep "long\|Error" ;;
c2) # run right after c (warm): kdt-regs' times, which call c's 80 s limit cut off while compiling
    on kdt-regs timeout 250 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/kdt-regs_forward.log | grep "ok\|FAIL\|Error\|gdn fwd" ;;
f)  # run between d and e: where the Mamba-2 fwd+bwd spends its time at 2K after the walk change
    main timeout 150 python $B --variants mamba2 --profile 2048 2>&1 | tee $OUT/mamba2_profile.log | grep "kernel\|Self CUDA" ;;
*)  echo "usage: bash benchmarks/gpu_session6.sh a|b|c|c2|d|f|e" >&2; exit 2 ;;
esac
