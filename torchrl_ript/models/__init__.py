"""RIPT policies: QueST token policy, OFT-style Laplace regression policy,
Hugging Face VLAs with LoRA (``torchrl_ript.models.hf_vla``, needs the
``transformers``/``peft`` extra), and checkpoint helpers."""
from torchrl_ript.models.checkpoint import load_policy, save_policy
from torchrl_ript.models.common import (
    EncoderConfig,
    ObservationEncoder,
    ResNetImageEncoder,
    count_parameters,
    instruction_strings,
)
from torchrl_ript.models.regression_policy import (
    RegressionConfig,
    RegressionPolicy,
    make_regression_actor,
    regression_config,
)
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
    "save_policy",
    "load_policy",
]
