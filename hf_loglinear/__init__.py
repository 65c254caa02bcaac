"""hf-loglinear: log-linear attention (Guo et al., ICLR 2026) for the Hugging Face ecosystem."""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import HierarchicalCache
from .configuration_loglinear_gated_deltanet import LogLinearGatedDeltaNetConfig
from .configuration_loglinear_mamba2 import LogLinearMamba2Config
from .modeling_loglinear_gated_deltanet import LogLinearGatedDeltaNetForCausalLM, LogLinearGatedDeltaNetModel
from .modeling_loglinear_mamba2 import LogLinearMamba2ForCausalLM, LogLinearMamba2Model
from .ops import LevelState, loglinear_attention, loglinear_attention_step

__version__ = "0.1.0"
__all__ = [
    "LevelState",
    "loglinear_attention",
    "loglinear_attention_step",
    "HierarchicalCache",
    "LogLinearMamba2Config",
    "LogLinearMamba2Model",
    "LogLinearMamba2ForCausalLM",
    "LogLinearGatedDeltaNetConfig",
    "LogLinearGatedDeltaNetModel",
    "LogLinearGatedDeltaNetForCausalLM",
]

# Registered classes win over a folder's auto_map, so with the package installed
# Auto*.from_pretrained returns these classes (and isinstance checks hold).
for _config, _model, _causal_lm in (
    (LogLinearMamba2Config, LogLinearMamba2Model, LogLinearMamba2ForCausalLM),
    (LogLinearGatedDeltaNetConfig, LogLinearGatedDeltaNetModel, LogLinearGatedDeltaNetForCausalLM),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForCausalLM.register(_config, _causal_lm, exist_ok=True)
