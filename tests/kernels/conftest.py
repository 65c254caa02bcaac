"""Run the Triton kernels on CPU tensors through Triton's interpreter.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is decorated. ``levels.py``
decorates its Triton helpers at import, and a test collected earlier in the same pytest process
may already have imported it: re-run that module so its helpers become interpreter functions too.
Nothing else in the suite compiles Triton kernels on CPU, so the setting does not leak into
other tests' results.
"""
import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"
if "hf_loglinear.levels" in sys.modules:
    importlib.reload(sys.modules["hf_loglinear.levels"])
