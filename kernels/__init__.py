"""Implementations behind ``hf_loglinear.ops``: plain-torch references and Triton kernels.

Installed as ``hf_loglinear.kernels`` (never as a top-level ``kernels`` package).
"""
