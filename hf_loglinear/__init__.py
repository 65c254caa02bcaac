"""hf-loglinear: log-linear attention (Guo et al., ICLR 2026) for the Hugging Face ecosystem."""
from .ops import LevelState, loglinear_attention, loglinear_attention_step

__version__ = "0.1.0"
__all__ = ["LevelState", "loglinear_attention", "loglinear_attention_step"]
