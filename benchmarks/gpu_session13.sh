# Session 13 (2026-11-30, ninth session of the day). Main now holds m2-cumsum-kernel (merged after
# gpu_session12.sh a: Mamba-2 fwd+bwd 6.157 -> 6.093 ms at 2K) and _Backward.tokens without the
# size-one group sum (two ~18 us copies per Mamba-2 fwd+bwd at 2K in the profile). Branch
# m2-dlam-out: chunk_grad_kernel writes dlambda in lambda's dtype (no conversion pass over the
# [N, S, H, L] fp32 buffer, ~113 MB of traffic at 2K x 16 x 48 x 12; sm_90 offline its spill
# grows 792 -> 832 B). Before the call, from main's checkout:
#   rm -rf .ab_m2-dlam-out && mkdir .ab_m2-dlam-out && git archive m2-dlam-out kernels hf_loglinear | tar -x -C .ab_m2-dlam-out
#   grep -q "^.ab_m2-dlam-out" .git/info/exclude || echo '.ab_m2-dlam-out/' >> .git/info/exclude
# and keep .ab_m2-cumsum-kernel (its kernels are main's before the tokens change); carry
# [".whl", ".ab_m2-dlam-out", ".ab_m2-cumsum-kernel"].
# a: m2-dlam-out's bf16 Mamba-2 checks, then Mamba-2 fwd / fwd+bwd at 2K / 8K for m2-dlam-out,
#    main and main before the tokens change, one process each, in one call; then the fp32 GDN
#    checks beyond the dense case on main (three processes side by side: compiling is what
#    takes their time, and nothing is timed after them). Steps stop starting at 540 s.
# f: the final tables on main (after a: m2-dlam-out dropped, m2-chunk-offsets merged: chunk_g and
#    the row sum's offsets by decay_triton.chunk_offsets instead of torch): bf16 checks of both
#    variants; Mamba-2 at 2K / 8K with main before m2-chunk-offsets (.ab_before-offsets: `git
#    archive` of main before the merge, carried with [".whl", ".ab_before-offsets"]); then on
#    main Mamba-2 at every T beside fla and SDPA plus 128K / 1M, GDN at 2K / 8K, the Mamba-2
#    profile at 2K, decode at every batch.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
pkg /tmp/pkg .
for b in m2-dlam-out m2-cumsum-kernel before-offsets; do [ -d .ab_$b ] && pkg /tmp/pkg_$b .ab_$b; done
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
on() { local b=$1; shift; PYTHONPATH=/tmp/pkg_$b:/tmp/site "$@"; }  # run with branch $b's package
main() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
cap() {  # seconds step $1 may take: at most $1, and none once the call is near its end
  local left=$((540 - SECONDS)); [ "$left" -lt 20 ] && echo 0 || echo $(( $1 < left ? $1 : left ))
}
note() { echo "$*" | tee -a $OUT/summary.log; }
run() {  # $1: at most this many seconds (cap), $2: log name, the rest: the command; skipped near the end
  local t; t=$(cap $1); [ "$t" = 0 ] && { note "$2: not run (time)"; return; }
  local log=$2; shift 2; timeout $t "$@" > $OUT/$log.log 2>&1; note "$log: rc $? (${SECONDS} s)"
}
B=benchmarks/bench_kernels.py
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee $OUT/versions.log
case "$1" in
a)  b=m2-dlam-out
    [ -d /tmp/pkg_$b ] && [ -d /tmp/pkg_m2-cumsum-kernel ] || { echo "no .ab_ folders: see the header" >&2; exit 2; }
    on $b timeout 120 python $B --variants mamba2 --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/${b}_checks.log | grep "check\|FAIL\|Error\|done"
    grep -q "CHECKS FAILED" $OUT/${b}_checks.log && exit 1
    t=200  # the first timing process of a cold machine compiles fla's anchors
    for who in "on $b" main "on m2-cumsum-kernel"; do
      t=$(cap $t); [ "$t" = 0 ] && { note "$who timing: not run (time)"; continue; }
      echo "== $who" | tee -a $OUT/mamba2_ab_timing.log
      $who timeout $t python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee -a $OUT/mamba2_ab_timing.log | grep "ours\|Error"
      t=120
    done
    t=$(cap 400)
    if [ "$t" = 0 ]; then note "fp32 GDN checks: not run (time)"; else
      for c in packed init varlen; do
        main timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes float32 --gdn-checks $c > $OUT/gdn_checks_fp32_$c.log 2>&1 &
      done
      wait
      grep -h "check\|FAIL\|Error\|done" $OUT/gdn_checks_fp32_*.log
    fi ;;
f)  for v in mamba2 gdn; do
      main timeout 150 python $B --variants $v --skip-decode --lengths '' --check-dtypes bfloat16 2>&1 | tee $OUT/${v}_checks.log | grep "check\|FAIL\|Error\|done"
      grep -q "CHECKS FAILED" $OUT/${v}_checks.log && exit 1
    done
    mkdir -p $OUT/mamba2 $OUT/gdn
    [ -d /tmp/pkg_before-offsets ] && run 200 before-offsets_timing env PYTHONPATH=/tmp/pkg_before-offsets:/tmp/site python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,8192
    run 220 mamba2_timing env PYTHONPATH=/tmp/pkg:/tmp/site python $B --variants mamba2 --skip-checks --skip-decode --long 131072,1048576 --out $OUT/mamba2
    run 90 gdn_timing env PYTHONPATH=/tmp/pkg:/tmp/site python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/gdn
    run 60 mamba2_profile env PYTHONPATH=/tmp/pkg:/tmp/site python $B --variants mamba2 --profile 2048
    run 90 decode env PYTHONPATH=/tmp/pkg:/tmp/site python $B --variants mamba2 --skip-checks --lengths ''
    grep -h "ours\|long\|^| \|Error" $OUT/*_timing.log $OUT/decode.log | head -120
    cat $OUT/summary.log 2>/dev/null ;;
*)  echo "usage: bash benchmarks/gpu_session13.sh a|f" >&2; exit 2 ;;
esac
