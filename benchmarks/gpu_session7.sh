# The next session's device calls. Branches written in session 6 without device time
# (gpu_notes.md, version 7): gdn-scan-skip-last (the GDN level scan skips the push through a
# bucket's last chunk, its reverse scan the pulls a restart makes useless) and gdn-scan-skip-fresh
# (the same, and the forward also skips W h at a bucket's first chunk). Here, before call a, put
# each branch's package files where the device copy will find them:
#   for b in gdn-scan-skip-last gdn-scan-skip-fresh; do rm -rf .ab_$b && mkdir .ab_$b && git archive $b kernels hf_loglinear | tar -x -C .ab_$b; done
#   grep -q "^.ab_gdn-scan-skip" .git/info/exclude || printf '.ab_gdn-scan-skip-last/\n.ab_gdn-scan-skip-fresh/\n' >> .git/info/exclude
# then `bash benchmarks/gpu_session7.sh a` with carry [".whl", ".ab_gdn-scan-skip-last", ".ab_gdn-scan-skip-fresh"].
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
pkg /tmp/pkg .
for b in gdn-scan-skip-last gdn-scan-skip-fresh; do [ -d .ab_$b ] && pkg /tmp/pkg_$b .ab_$b; done
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
on() { local b=$1; shift; PYTHONPATH=/tmp/pkg_$b:/tmp/site "$@"; }  # run with branch $b's package
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
B=benchmarks/bench_kernels.py
case "$1" in
a)  # GDN forward of both branches beside main's (fault check at 192 / 384 bf16, error, times
    # beside num_levels=1 and fla; the first timing compiles at the bench shapes: 150 s limits)
    for b in gdn-scan-skip-last gdn-scan-skip-fresh; do
      CUDA_LAUNCH_BLOCKING=1 on $b timeout 90 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/${b}_fault.log | grep "ok\|FAIL\|Error"
      grep -q "^ok" $OUT/${b}_fault.log && on $b timeout 150 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/${b}_forward.log | grep "gdn fwd\|Error"
    done
    main timeout 150 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/main_gdn_forward.log | grep "gdn fwd\|Error" ;;
b)  # the faster branch's GDN bf16 checks (W=<branch>; the Triton backward recomputes through the
    # same scan; both branches also skip useless pulls in the reverse scan), then GDN fwd and
    # fwd+bwd at 2K / 8K for it and for main, each beside num_levels=1
    W=${W:-gdn-scan-skip-last}
    on $W timeout 200 python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/${W}_checks.log | grep "check\|FAIL\|Error\|done"
    on $W timeout 150 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/${W}_timing.log | grep "^  (\|Error"
    main timeout 150 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/main_gdn_timing.log | grep "^  (\|Error" ;;
c)  # the Mamba-2 gradient kernels' tiles (chunk_triton._grad_tiles)
    main timeout 400 python benchmarks/sweep_tiles.py grad 2>&1 | tee $OUT/sweep_grad.log | grep "^|" ;;
d)  # the Mamba-2 level scans' key / value tiles (chunk_triton._scan_tiles): key tiles below 128
    # give a batch of one long row more programs (48 x NJ x 1 at 64K with the default)
    main timeout 400 python benchmarks/sweep_tiles.py m2scan 2>&1 | tee $OUT/sweep_m2scan.log | grep "^|" ;;
*)  echo "usage: bash benchmarks/gpu_session7.sh a|b|c|d" >&2; exit 2 ;;
esac
