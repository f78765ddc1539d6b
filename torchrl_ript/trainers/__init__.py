"""Training: the RIPT loop, evaluation, optimiser helpers."""
from torchrl_ript.trainers.evaluate import (
    EXPLORATION_MODES,
    evaluate_modes,
    evaluate_success,
    exploration_modes,
    repeat_starts,
    save_video,
)
from torchrl_ript.trainers.optim import make_optimizer, make_param_groups, make_scheduler
from torchrl_ript.trainers.ript import CheckpointError, RIPTTrainer
from torchrl_ript.trainers.stats import paired_count_test, paired_success_test, per_start_success

# last: the audit builds on the factory, which imports the modules above
from torchrl_ript.trainers.audit import (
    log_ratio_variance_shares,
    ratio_statistics,
    scale_statistics,
    signal_audit,
)

__all__ = [
    "EXPLORATION_MODES",
    "evaluate_modes",
    "evaluate_success",
    "exploration_modes",
    "repeat_starts",
    "save_video",
    "make_optimizer",
    "make_param_groups",
    "make_scheduler",
    "CheckpointError",
    "RIPTTrainer",
    "paired_success_test",
    "paired_count_test",
    "per_start_success",
    "log_ratio_variance_shares",
    "ratio_statistics",
    "scale_statistics",
    "signal_audit",
]
