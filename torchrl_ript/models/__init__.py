"""RIPT policies: QueST token policy, OFT-style Laplace regression policy,
Hugging Face VLAs with LoRA (``torchrl_ript.models.hf_vla``; building or
loading one needs the ``transformers``/``peft`` extra), the policy registry
(:mod:`torchrl_ript.models.registry`: one entry per kind) and checkpoint
helpers.

Importing this package registers the built-in kinds ``"quest"``,
``"regression"`` and ``"hf"``.
"""
from torchrl_ript.models.checkpoint import CheckpointError, load_policy, save_policy
from torchrl_ript.models.common import (
    EncoderConfig,
    ObservationEncoder,
    ResNetImageEncoder,
    count_parameters,
    instruction_strings,
)
from torchrl_ript.models.hf_vla import HFVLAConfig, HFVLAPolicy
from torchrl_ript.models.language import (
    HashedBagOfWords,
    LanguageEncoder,
    SentenceEncoder,
    make_language_encoder,
    minilm_path,
)
from torchrl_ript.models.quest import (
    QuestActor,
    QuestConfig,
    QuestDecoder,
    QuestPolicy,
    SkillAutoencoder,
    SkillPrior,
    make_quest_actor,
    quest_config,
)
from torchrl_ript.models.registry import (
    BuildSpec,
    PolicyBundle,
    PolicyKind,
    SFTOptions,
    build_policy,
    policy_kind,
    policy_kind_of,
    policy_kinds,
    register_policy_kind,
    set_sampling,
    unregister_policy_kind,
    wrap_policy,
)
from torchrl_ript.models.regression_policy import (
    RegressionConfig,
    RegressionPolicy,
    make_regression_actor,
    regression_config,
)

__all__ = [
    "EncoderConfig",
    "ObservationEncoder",
    "ResNetImageEncoder",
    "count_parameters",
    "instruction_strings",
    "HashedBagOfWords",
    "LanguageEncoder",
    "SentenceEncoder",
    "make_language_encoder",
    "minilm_path",
    "QuestActor",
    "QuestConfig",
    "QuestDecoder",
    "QuestPolicy",
    "SkillAutoencoder",
    "SkillPrior",
    "make_quest_actor",
    "quest_config",
    "RegressionConfig",
    "RegressionPolicy",
    "make_regression_actor",
    "regression_config",
    "HFVLAConfig",
    "HFVLAPolicy",
    "BuildSpec",
    "PolicyBundle",
    "PolicyKind",
    "SFTOptions",
    "build_policy",
    "policy_kind",
    "policy_kind_of",
    "policy_kinds",
    "register_policy_kind",
    "set_sampling",
    "unregister_policy_kind",
    "wrap_policy",
    "save_policy",
    "load_policy",
    "CheckpointError",
]
