"""Training: the RIPT loop, evaluation, optimiser helpers."""
from torchrl_ript.trainers.evaluate import evaluate_success, save_video
from torchrl_ript.trainers.optim import make_optimizer, make_param_groups, make_scheduler
from torchrl_ript.trainers.ript import RIPTTrainer

__all__ = [
    "evaluate_success",
    "save_video",
    "make_optimizer",
    "make_param_groups",
    "make_scheduler",
    "RIPTTrainer",
]
