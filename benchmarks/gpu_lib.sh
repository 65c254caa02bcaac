# What every gpu_session*.sh from 15 on starts with (sourced from the checkout's root on the
# device): the carried wheels installed into /tmp/site, this checkout installed into /tmp/pkg
# (`pkg` installs another, e.g. an `.ab_<branch>` folder), one triton cache for the call, and
# helpers: `cap S` (seconds a step may take before the call's end), `note` (to summary.log),
# `ours CMD` (with this checkout on the path), `timed LABEL ROOT S [ARGS]` (debug_gdn_forward.py's
# check and timing of the checkout at ROOT, in its own process), `fault_check LABEL`, `sweep LABEL
# ROOT S CONFIG...` (debug_gdn_forward.py sweep at 192 / 384 in bf16), `gdn_checks S DTYPES`
# (bench_kernels.py's GDN checks), `forward_checks S "K V dtype"...` (debug_gdn_forward.py's),
# `gdn_table S` (the GDN timings at 2K / 8K: ours, num_levels=1, fla, SDPA in one run).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() {  # $1: where; $2: the root holding hf_loglinear/ and kernels/ to install
  mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" "$2/conversion" "$2/model_cards" "$1/hf_loglinear/"
}
pkg /tmp/pkg .
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/../.triton_cache
cap() {  # seconds step $1 may take: at most $1, and none once the call (600 s) nears its end
  local left=$((560 - SECONDS)); [ "$left" -lt 20 ] && echo 0 || echo $(( $1 < left ? $1 : left ))
}
note() { echo "$*" | tee -a $OUT/summary.log; }
ours() { PYTHONPATH=/tmp/pkg:/tmp/site "$@"; }
timed() {  # $1: label, $2: PYTHONPATH root, $3: seconds, rest: debug_gdn_forward.py arguments
  local label=$1 root=$2 t; t=$(cap $3); shift 3
  [ "$t" = 0 ] && { note "$label: not run (time)"; return; }
  PYTHONPATH=$root:/tmp/site timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 "$@" time > $OUT/$label.log 2>&1
  note "$label: rc $? $(grep "^ok\|^FAIL" $OUT/$label.log | head -1) (${SECONDS} s)"
  grep "^gdn fwd" $OUT/$label.log | sed "s/^/  /" | tee -a $OUT/summary.log
}
B=benchmarks/bench_kernels.py
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee $OUT/versions.log
fault_check() {  # $1: label; this checkout's GDN forward at 192 / 384 in bf16, launches blocking; exits the call on FAIL
  local t; t=$(cap 150)
  ours env CUDA_LAUNCH_BLOCKING=1 timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 > $OUT/$1_fault_check.log 2>&1
  note "$1 fault check: rc $? $(grep "^ok\|^FAIL" $OUT/$1_fault_check.log | head -1) (${SECONDS} s)"
  grep -q "^ok" $OUT/$1_fault_check.log || { tail -20 $OUT/$1_fault_check.log; exit 1; }
}
sweep() {  # $1: label, $2: PYTHONPATH root, $3: seconds, rest: debug_gdn_forward.py sweep configs
  local label=$1 root=$2 t; t=$(cap $3); shift 3
  PYTHONPATH=$root:/tmp/site timeout $t python benchmarks/debug_gdn_forward.py 192 384 bfloat16 sweep "$@" > $OUT/${label}_sweep.log 2>&1
  note "$label sweep: rc $? (${SECONDS} s)"; grep "split\|^ok\|^FAIL" $OUT/${label}_sweep.log | cut -c1-400 | tee -a $OUT/summary.log
}
gdn_checks() {  # $1: seconds, $2: dtypes; this checkout's GDN checks (forward and every gradient)
  local t; t=$(cap $1)
  ours timeout $t python $B --variants gdn --skip-decode --lengths '' --check-dtypes $2 > $OUT/gdn_checks.log 2>&1
  note "$2 checks: rc $? $(grep -c "^check" $OUT/gdn_checks.log) lines, $(grep -c "FAIL" $OUT/gdn_checks.log) FAIL (${SECONDS} s)"
  grep "^check" $OUT/gdn_checks.log | tee -a $OUT/summary.log
}
forward_checks() {  # $1: seconds each, rest: "K V dtype" cases; this checkout's forward and final state
  local each=$1 t; shift
  for args in "$@"; do
    t=$(cap $each); [ "$t" = 0 ] && break
    ours timeout $t python benchmarks/debug_gdn_forward.py $args >> $OUT/side.log 2>&1
  done
  grep "^ok\|^FAIL" $OUT/side.log | cut -c1-200 | tee -a $OUT/summary.log
}
gdn_table() {  # $1: seconds; this checkout's GDN timing table at 2K / 8K, fla and SDPA beside it
  local t; t=$(cap $1); mkdir -p $OUT/tables
  ours timeout $t python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT/tables > $OUT/gdn_timing.log 2>&1
  note "timing: rc $? (${SECONDS} s)"; grep "ours\|fla\|sdpa" $OUT/gdn_timing.log | tee -a $OUT/summary.log
}
