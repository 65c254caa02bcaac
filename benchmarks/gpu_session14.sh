# Session 14: the Gated DeltaNet forward level scan on keys padded in memory (branch gdn-scan-padded,
# HF_LOGLINEAR_GDN_SCAN=padded): chunk_triton._pad_keys copies k and W zero-padded to the key tile
# (256 for K = 192), and scan_triton.level_scan_delta_kernel with KPAD loads them with no key mask,
# ahead of its run-time branch, in a loop with its own pipeline stages (tl.range num_stages: the
# launch's num_stages alone pipelines only loads feeding a dot outside any branch, so main's
# loads were never prefetched), the decay on the value side; the products stay behind the branch
# and the recorded states keep K rows. Never run on a GPU: main's form faulted on the H200 when its
# masked K = 192 loads left the branch (gpu_notes.md, version 5) and gdn-scan-ktiles with an
# unmasked 64-key tile (version 6), so a fault is possible. sm_90 offline, bf16 (triton 3.9),
# level_scan_delta_kernel registers / stack / shared at 192 / 384: padded (two stages, 12 async
# copies into shared memory) 255 / 320 - 496 B / 169 KB; main 255 / 568 - 648 B / 72 KB, no async
# copy. Three stages take 241 KB (too much); value tiles of 32 at two stages: 225 - 250, no stack,
# 149 KB.
# Run from a checkout of gdn-scan-padded, carrying [".whl"]:
#   bash benchmarks/gpu_session14.sh all      (one call, about 6 - 9 minutes cold; steps stop
#                                              starting at 540 s, so it ends within a call's 600 s)
#   bash benchmarks/gpu_session14.sh checks   (the padded form's bf16 checks alone, if all ran out of time)
#   bash benchmarks/gpu_session14.sh sweep    (if padded ran: its scan at 2 stages, 1 stage, and
#                                              2 stages with value tiles of 32, checked and timed)
# all: (a) fault check of the padded form and main's default (debug_gdn_forward.py bf16 192 / 384,
# each in its own process, launches blocking, under timeout); (b) of each form that did not fault,
# the GDN forward (and fwd+bwd) at 2K / 8K (bench_kernels.py, a process each, padded first; the
# first gets 200 s: a cold machine compiles fla's anchors there); (c) the padded form's bf16 GDN
# checks, forward and backward (last: a slow cold machine loses them rather than a time). A fault,
# failure or timeout is recorded in $OUT/summary.log and the next step goes on.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" conversion model_cards "$1/hf_loglinear/"
}
pkg /tmp/pkg .
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.triton_cache
form() { local f=$1; shift; HF_LOGLINEAR_GDN_SCAN=$([ "$f" = main ] || echo "$f") PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
cap() {  # seconds step $1 may take: at most $1, and none once the call is near its end
  local left=$((540 - SECONDS)); [ "$left" -lt 20 ] && echo 0 || echo $(( $1 < left ? $1 : left ))
}
note() { echo "$*" | tee -a $OUT/summary.log; }
B=benchmarks/bench_kernels.py
checks() {  # the padded form's bf16 GDN checks (the first process to compile the backward)
  local t; t=$(cap 150); [ "$t" = 0 ] && { note "padded checks: not run (time)"; return; }
  form padded timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes bfloat16 \
    > $OUT/padded_gdn_checks.log 2>&1; local rc=$?
  grep "check\|FAIL\|Error\|done" $OUT/padded_gdn_checks.log | tail -8
  if [ $rc = 0 ] && ! grep -q "CHECKS FAILED" $OUT/padded_gdn_checks.log; then note "padded checks: passed (${SECONDS} s)"
  else note "padded checks: FAILED, rc $rc (124: timeout) (${SECONDS} s)"; fi
}
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee $OUT/versions.log
case "$1" in
all)
    ok=""
    for f in padded main; do  # (a) fault checks (the first compiles the forward, ~60 - 90 s)
      t=$(cap 180); [ "$t" = 0 ] && { note "$f fault check: not run (time)"; continue; }
      form $f env CUDA_LAUNCH_BLOCKING=1 timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 \
        > $OUT/${f}_fault_check.log 2>&1; rc=$?
      tail -3 $OUT/${f}_fault_check.log
      if grep -q "^ok" $OUT/${f}_fault_check.log; then ok="$ok $f"; note "$f fault check: $(grep "^ok" $OUT/${f}_fault_check.log) (${SECONDS} s)"
      else note "$f fault check: FAILED, rc $rc (124: timeout) (${SECONDS} s)"; fi
    done
    t0=200  # (b) GDN forward at 2K / 8K; the first timing process of a cold machine compiles fla's anchors
    for f in $ok; do
      t=$(cap $t0); [ "$t" = 0 ] && { note "$f timing: not run (time)"; continue; }
      mkdir -p $OUT/$f
      form $f timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/$f \
        > $OUT/${f}_gdn_timing.log 2>&1; rc=$?
      note "$f timing: rc $rc (${SECONDS} s)"
      grep "ours" $OUT/${f}_gdn_timing.log | grep "'fwd'" | sed "s/^/  $f /" | tee -a $OUT/summary.log
      t0=120
    done
    case " $ok " in *" padded "*) checks ;; *) note "padded checks: not run (fault check)" ;; esac  # (c)
    cat $OUT/summary.log ;;
checks)
    checks ;;
sweep)  # the padded scan at 2 stages (all's), 1, and 2 with value tiles of 32: a process each checks
    # the forward (error against float64 at T = 1000) and times it at 2K / 8K beside fla's
    for cfg in 2 1 2x32; do
      t=$(cap 170); [ "$t" = 0 ] && { note "padded $cfg: not run (time)"; continue; }
      form padded timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 $cfg time \
        > $OUT/padded_sweep_$cfg.log 2>&1; rc=$?
      note "padded $cfg: $(grep "^ok\|^FAIL" $OUT/padded_sweep_$cfg.log | head -1) rc $rc (${SECONDS} s)"
      grep "^gdn fwd" $OUT/padded_sweep_$cfg.log | sed "s/^/  /" | tee -a $OUT/summary.log
    done
    cat $OUT/summary.log ;;
*)  echo "usage: bash benchmarks/gpu_session14.sh all|checks|sweep" >&2; exit 2 ;;
esac
