"""Data builders for the model tests (tiny configs, CPU)."""
from __future__ import annotations

import torch
from tensordict import NonTensorStack, TensorDict

from torchrl_ript.models.common import IMAGE_KEY, WRIST_IMAGE_KEY

INSTRUCTIONS = ["open the drawer", "close the drawer", "push the button"]


def make_obs(batch: int, *, cameras: int = 1, image_size: int = 32, state_dim: int = 8, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    td = TensorDict(
        {
            IMAGE_KEY: torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=g),
            ("observation", "state"): torch.randn(batch, state_dim, generator=g),
            "language_instruction": NonTensorStack(*[INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]),
        },
        [batch],
    )
    if cameras == 2:
        td.set(WRIST_IMAGE_KEY, torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=g))
    return td


def camera_keys(cameras: int):
    return (IMAGE_KEY,) if cameras == 1 else (IMAGE_KEY, WRIST_IMAGE_KEY)


def toy_demos(n_demos: int = 4, T: int = 24, action_dim: int = 4, *, image_size: int = 32, seed: int = 0):
    """Smooth sinusoidal action demos whose phase is visible in the state."""
    g = torch.Generator().manual_seed(seed)
    demos = []
    for i in range(n_demos):
        phase = torch.rand(action_dim, generator=g) * 6.28
        t = torch.arange(T, dtype=torch.float32)[:, None]
        actions = 0.8 * torch.sin(0.3 * t + phase)
        state = torch.cat([torch.sin(0.3 * t + phase), torch.cos(0.3 * t + phase)], -1)
        demos.append(
            TensorDict(
                {
                    IMAGE_KEY: torch.randint(0, 256, (T, 3, image_size, image_size), dtype=torch.uint8, generator=g),
                    ("observation", "state"): state,
                    "action": actions,
                    "language_instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
                    ("next", "reward"): torch.zeros(T, 1),
                },
                [T],
            )
        )
    return demos


