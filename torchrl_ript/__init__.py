"""torchrl-ript: RIPT-VLA on TorchRL."""
