# Session 4's sixth GPU call (the device time left: ~3 minutes): the GDN forward with the delta
# scan in the form that ran correctly in call 2 (one launch, loads behind a run-time branch):
# fault check at K = 192 / V = 384 bf16 with its error, then its forward time at 2K and 8K beside
# num_levels=1 and fla's chunk_gated_delta_rule.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
timeout 120 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 time 2>&1 | tee $OUT/gdn_forward.log | grep -v Warning | tail -6
