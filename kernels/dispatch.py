"""Backend registry: maps the names of ``ops`` backends to their implementations."""
from __future__ import annotations


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def get_backend(name: str):
    """The whole-sequence function of backend ``name`` (signature of ``ops.loglinear_attention``)."""
    if name == "reference":
        from .naive import naive_loglinear_attention

        return naive_loglinear_attention
    if name == "torch":
        from .chunk import chunk_loglinear_attention

        return chunk_loglinear_attention
    if name == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        from .chunk_triton import chunk_loglinear_attention_triton

        return chunk_loglinear_attention_triton
    raise ValueError(f"unknown backend {name!r}")


def get_step_backend(name: str):
    """The one-token step of backend ``name`` (signature of ``ops.loglinear_attention_step``)."""
    if name in ("reference", "torch"):
        from .recurrent import step_loglinear_attention

        return step_loglinear_attention
    if name == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
        from .step_triton import step_loglinear_attention_triton

        return step_loglinear_attention_triton
    raise ValueError(f"unknown backend {name!r}")
