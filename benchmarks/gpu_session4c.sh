# Session 4's third GPU call: the level scan with its top launched beside it and the decay on the
# value side. Checks first (Mamba-2 and the dense GDN with its Triton backward), then where the GDN
# forward's time goes and GDN timings at 2K and 8K, then the quick Mamba-2 timings.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1
B=benchmarks/bench_kernels.py
timeout 300 python $B --quick --skip-decode 2>&1 | tee $OUT/quick.log | grep -v "^|" | grep -v "^  ("
timeout 60 python $B --variants gdn --profile 2048 2>&1 | tee $OUT/gdn_profile.log | grep "kernel\|Self CUDA"
timeout 150 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 2>&1 | tee $OUT/gdn_timing.log | grep "gdn\|Error"
