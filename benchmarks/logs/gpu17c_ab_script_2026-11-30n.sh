python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
pkg() { mkdir -p "$1" && cp -r "$2/hf_loglinear" "$1/" && cp -r "$2/kernels" "$2/conversion" "$2/model_cards" "$1/hf_loglinear/"; }
pkg /tmp/pkgold ../.ab_old; pkg /tmp/pkgnew .
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/../.triton_cache
for v in old new old new; do
  PYTHONPATH=/tmp/pkg$v:/tmp/site timeout 230 python benchmarks/bench_kernels.py --variants gdn --skip-checks --skip-decode --lengths 2048,8192 > $OUT/ab_$v.log 2>&1
  echo "$v rc $? (${SECONDS} s)"; grep "ours" $OUT/ab_$v.log | grep -v "^|"
done
