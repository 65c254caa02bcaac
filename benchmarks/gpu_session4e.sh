# Session 4's last GPU call: the GDN forward fault fixed (masked key tiles scaled in registers);
# the fault case again, the dense GDN check with its Triton backward (fp32 + bf16), GDN timings at
# 2K and 8K (ours, num_levels=1, fla, SDPA), then Mamba-2 at 2K, 16K, 64K (ours, L=1, fla, SDPA).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg/hf_loglinear && cp -r hf_loglinear/. /tmp/pkg/hf_loglinear/ && cp -r kernels conversion model_cards /tmp/pkg/hf_loglinear/
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
B=benchmarks/bench_kernels.py
CUDA_LAUNCH_BLOCKING=1 timeout 40 python benchmarks/debug_gdn_forward.py 192 384 bfloat16 2>&1 | tee $OUT/gdn_forward_fault.log | tail -2
export HF_LOGLINEAR_TRITON_BACKWARD_DELTA=1
timeout 100 python $B --variants gdn --skip-checks --skip-decode --lengths 2048,8192 --out $OUT 2>&1 | tee $OUT/gdn_timing.log | grep "gdn\|Error"
mv $OUT/bench_kernels.md $OUT/gdn_table.md 2>/dev/null
timeout 170 python $B --variants mamba2 --skip-checks --skip-decode --lengths 2048,16384,65536 --out $OUT 2>&1 | tee $OUT/mamba2_timing.log | grep "mamba2\|attn\|Error"
timeout 150 python $B --variants gdn --quick --skip-decode --lengths '' 2>&1 | tee $OUT/gdn_checks.log | grep "check\|FAIL\|Error"
