"""Hugging Face vision-language models as RIPT Laplace actors, with LoRA.

:class:`HFVLAPolicy` turns a ``transformers`` image-text model (LLaVA-style:
``input_ids`` with image placeholder tokens + ``pixel_values``; e.g.
``LlavaForConditionalGeneration``, or an OpenVLA-OFT-style checkpoint loaded
from a local folder) into the network of a Laplace (or Gaussian) actor:

* the prompt (OpenVLA's ``"In: What action should the robot take to
  {instruction}?\\nOut:"``) is followed by ``chunk_size`` action slots; as in
  OpenVLA-OFT's parallel decoding, one forward pass per decision encodes the
  image + prompt prefix once and the hidden states of the slots feed an MLP
  action head (``"loc"`` ``[B, chunk, A]``, trained with L1) and a
  :class:`~torchrl_ript.modules.ScaleHead` (``"scale"``);
* the backbone is frozen; LoRA adapters (``peft``, rank 32 by default) go on
  the language model's linear layers. The vision tower has no adapter and
  no trainable weight, so autograd records nothing for it: the image is
  encoded without grad, also inside the PPO loss;
* :meth:`HFVLAPolicy.param_groups` gives separate learning rates (paper:
  ``1e-4`` LoRA, ``1e-5`` action head; the scale head its own);
* on CUDA the backbone runs in bfloat16 (heads stay float32).

Rows are left-padded with explicit ``position_ids``, so a row's output does
not depend on the other rows of the batch (the collector and the loss batch
differently, and the log-probs must agree).

The policy kind ``"hf"`` (:mod:`torchrl_ript.models.registry`) is registered
at the end of this module: built from a local folder, trained with the
regression policy's SFT recipe, checkpointed as adapters + heads (with the
backbone's folder). ``transformers``, ``peft`` and ``tokenizers`` are an
optional extra: they are imported where they are used, so importing this
module (and registering the kind) does not need them.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import MLP

from torchrl_ript.models.common import IMAGE_KEY, INSTRUCTION_KEY, call_flat, count_parameters, instruction_strings
from torchrl_ript.models.registry import BuildSpec, PolicyKind, register_policy_kind
from torchrl_ript.models.regression_policy import (
    check_scale_multiplier,
    legacy_scale_config,
    make_regression_actor,
    regression_sft,
    scale_head_parameters,
)
from torchrl_ript.modules.scale_head import OFT_MAX_SCALE, OFT_MIN_SCALE, ScaleHead

__all__ = ["HFVLAConfig", "HFVLAPolicy", "ByteTokenizer", "make_hf_tokenizer", "save_tiny_llava", "HF_KIND"]

_LANGUAGE_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class HFVLAConfig:
    """Settings of :class:`HFVLAPolicy`.

    Attributes:
        image_token_id: id of the image placeholder token of the backbone;
            ``None`` reads ``image_token_id`` (or ``image_token_index``) from
            the backbone's config.
        num_image_tokens: placeholders per image (LLaVA: number of patches);
            ``None`` reads ``(image_size // patch_size) ** 2`` from the
            backbone's vision config.
        action_slot_id: token id written in the action slots (OFT feeds empty
            action embeddings; any fixed id works since LoRA adapts to it).
        pad_token_id: id of left padding (masked out).
        lora_targets: regex of the module names that get LoRA (default: the
            language model's attention and MLP projections).
    """

    action_dim: int = 7
    chunk_size: int = 8
    image_token_id: int | None = None
    num_image_tokens: int | None = None
    action_slot_id: int = 0
    pad_token_id: int = 0
    prompt: str = "In: What action should the robot take to {instruction}?\nOut:"
    image_size: int | None = None
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    lora_rank: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = _LANGUAGE_LINEAR
    head_hidden: int = 256
    scale_hidden: int = 256
    init_scale: float = 0.2
    min_scale: float = OFT_MIN_SCALE  # the scale head's bounds: see RegressionConfig (the paper's OFT:
    max_scale: float | None = OFT_MAX_SCALE  # log-scale in [-2, 0.5]); None: the former unbounded head
    scale_multiplier: float = 1.0  # multiplies the sampled and scored scale (a sampling option)
    loss: str = "l1"
    backbone_dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 on CPU
    pretrained: str | None = None  # local folder of the backbone (set by from_pretrained; checkpoints reload from it)

    @property
    def distribution(self) -> str:
        return "laplace" if self.loss == "l1" else "gaussian"

    def to_dict(self) -> dict:
        return asdict(self)


class ByteTokenizer:
    """Offline byte-level tokenizer: ``id = byte + offset`` (ids below
    ``offset`` are free for special tokens). For tests and tiny backbones.

    Examples:
        >>> ByteTokenizer(offset=4)(["ab"])
        [[101, 102]]
    """

    def __init__(self, offset: int = 4, bos_id: int | None = None) -> None:
        self.offset = offset
        self.bos_id = bos_id
        self.vocab_size = 256 + offset

    def __call__(self, texts: list[str]) -> list[list[int]]:
        head = [self.bos_id] if self.bos_id is not None else []
        return [head + [b + self.offset for b in t.encode("utf-8")] for t in texts]


def make_hf_tokenizer(tokenizer) -> callable:
    """Adapt a ``transformers`` tokenizer to ``list[str] -> list[list[int]]``."""

    def _tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=True)["input_ids"]

    return _tokenize


class HFVLAPolicy(TensorDictModuleBase):
    """A ``transformers`` VLM + LoRA + action/scale heads -> ``"loc"``, ``"scale"``.

    Args:
        backbone: a LLaVA-style ``PreTrainedModel`` (``input_ids``,
            ``pixel_values``, ``attention_mask``, ``position_ids``,
            ``output_hidden_states``).
        tokenizer: ``list[str] -> list[list[int]]`` (see :class:`ByteTokenizer`,
            :func:`make_hf_tokenizer`).
        config: :class:`HFVLAConfig`.
        image_key: camera read from the tensordict.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer,
        config: HFVLAConfig,
        *,
        image_key: NestedKey = IMAGE_KEY,
        loc_key: NestedKey = "loc",
        scale_key: NestedKey = "scale",
        apply_lora: bool = True,
    ) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model  # optional extra: imported only when a VLA is built

        self.config = config
        self.tokenizer = tokenizer
        if config.image_token_id is None:
            backbone_config = getattr(backbone, "config", None)
            token = getattr(backbone_config, "image_token_id", None)
            token = getattr(backbone_config, "image_token_index", None) if token is None else token
            if token is None:
                raise ValueError("set HFVLAConfig.image_token_id: the backbone's config has no image_token_id.")
            config.image_token_id = int(token)
        vision = getattr(getattr(backbone, "config", None), "vision_config", None)
        if config.image_size is None:
            config.image_size = getattr(vision, "image_size", 224)
        if config.num_image_tokens is None:
            patch = getattr(vision, "patch_size", None)
            if patch is None:
                raise ValueError("set HFVLAConfig.num_image_tokens: the backbone has no vision_config.patch_size.")
            config.num_image_tokens = (config.image_size // patch) ** 2
        for p in backbone.parameters():
            p.requires_grad_(False)
        if apply_lora:
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.lora_targets,
                bias="none",
            )
            backbone = get_peft_model(backbone, lora)
        self.backbone = backbone
        hidden = _hidden_size(backbone)
        self.action_head = MLP(
            in_features=hidden, out_features=config.action_dim,
            num_cells=[config.head_hidden, config.head_hidden], activation_class=nn.GELU,
        )
        self.scale_head = ScaleHead(hidden, (config.action_dim,), hidden=config.scale_hidden, init_scale=config.init_scale,
                                    min_scale=config.min_scale, max_scale=config.max_scale)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.image_key = image_key
        self.in_keys = [image_key, INSTRUCTION_KEY]
        self.out_keys = [loc_key, scale_key]

    # -- construction from a local folder -------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        config: HFVLAConfig,
        *,
        trust_remote_code: bool = False,
        model_class=None,
        **kwargs,
    ) -> HFVLAPolicy:
        """Load backbone + tokenizer from a *local* folder (never the hub)."""
        import transformers  # optional extra: imported only when a VLA is loaded

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model_class = model_class or getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"{path} is not a folder: give the local folder of a transformers checkpoint "
                "(config.json, weights, tokenizer files); model hubs are not used."
            )
        backbone = model_class.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        if config.pad_token_id == 0 and tok.pad_token_id is not None:
            config.pad_token_id = tok.pad_token_id
        config.pretrained = str(os.path.abspath(path))
        policy = cls(backbone, make_hf_tokenizer(tok), config, **kwargs)
        policy.hf_tokenizer = tok
        return policy

    # -- inputs ---------------------------------------------------------------
    def _backbone_dtype(self, device: torch.device) -> torch.dtype:
        mode = self.config.backbone_dtype
        if mode == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, mode)

    def to(self, *args, **kwargs):  # keep the backbone in its compute dtype
        out = super().to(*args, **kwargs)
        device = next(self.action_head.parameters()).device
        self.backbone.to(dtype=self._backbone_dtype(device))
        return out

    def _pixels(self, image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return ((x - self.image_mean) / self.image_std).to(dtype)

    def _token_batch(self, strings: list[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        prompts = self.tokenizer([c.prompt.format(instruction=s) for s in strings])
        rows = [[c.image_token_id] * c.num_image_tokens + list(p) + [c.action_slot_id] * c.chunk_size for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), c.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: action slots end every row
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        return ids.to(device), mask.to(device), position_ids.to(device)

    # -- forward --------------------------------------------------------------
    def slot_features(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Last hidden states of the action slots, ``[B, chunk, hidden]`` float32."""
        if tensordict.batch_dims != 1:
            raise ValueError(f"expected one batch dim [B], got {tensordict.batch_size}.")
        device = self.image_mean.device
        dtype = self._backbone_dtype(device)
        batch = tensordict.batch_size[0]
        ids, mask, pos = self._token_batch(instruction_strings(tensordict, INSTRUCTION_KEY, batch), device)
        pixels = self._pixels(tensordict.get(self.image_key).to(device), dtype)
        out = self.backbone(
            input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=pos,
            output_hidden_states=True, use_cache=False,
        )
        return out.hidden_states[-1][:, -self.config.chunk_size :].float()

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return call_flat(tensordict, self._forward, self.out_keys)

    def _forward(self, tensordict: TensorDictBase) -> None:
        feats = self.slot_features(tensordict)
        tensordict.set(self.out_keys[0], self.action_head(feats))
        tensordict.set(self.out_keys[1], self.scale_head(feats))

    # the RegressionPolicy interface of the SFT code (torchrl_ript.trainers.sft)
    def features(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Slot features of a ``[B]`` batch (see :meth:`slot_features`)."""
        return self.slot_features(tensordict)

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """The action head: ``[B, chunk, A]`` chunk means (``"loc"``)."""
        return self.action_head(features)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``policy`` (LoRA + action head: trained by L1) and ``scale_head`` (by NLL)."""
        return {
            "policy": self.lora_parameters() + list(self.action_head.parameters()),
            "scale_head": list(self.scale_head.parameters()),
        }

    # -- optimisation ---------------------------------------------------------
    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.named_parameters() if "lora_" in n and p.requires_grad]

    def param_groups(self, *, lr_lora: float = 1e-4, lr_head: float = 1e-5, lr_scale: float = 1e-4) -> list[dict]:
        """Optimizer groups: LoRA adapters, action head, scale head."""
        return [
            {"params": self.lora_parameters(), "lr": lr_lora, "name": "lora"},
            {"params": list(self.action_head.parameters()), "lr": lr_head, "name": "action_head"},
            {"params": list(self.scale_head.parameters()), "lr": lr_scale, "name": "scale_head"},
        ]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA + heads only (what RL / SFT changes), for small checkpoints."""
        keep = re.compile(r"(lora_|^action_head\.|^scale_head\.)")
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if keep.search(k)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(state) - set(self.state_dict())
        if missing:
            raise KeyError(f"unknown keys in the adapter checkpoint: {sorted(missing)[:5]}")
        self.load_state_dict(state, strict=False)

    def num_parameters(self) -> dict[str, int]:
        return {
            "backbone_frozen": sum(p.numel() for n, p in self.backbone.named_parameters() if "lora_" not in n),
            "lora": sum(p.numel() for p in self.lora_parameters()),
            "action_head": count_parameters(self.action_head),
            "scale_head": count_parameters(self.scale_head),
            "total": count_parameters(self),
        }


def _hidden_size(backbone: nn.Module) -> int:
    cfg = backbone.config
    text = getattr(cfg, "text_config", None)
    for c in (text, cfg):
        if c is not None and getattr(c, "hidden_size", None):
            return int(c.hidden_size)
    raise ValueError("cannot read the backbone's hidden size from its config.")


def save_tiny_llava(path: str | os.PathLike, *, image_size: int = 32, hidden: int = 32, layers: int = 2, seed: int = 0) -> str:
    """Save a tiny *randomly initialised* LLaVA (CLIP vision + Llama text) and a
    byte-level tokenizer to ``path``: a local checkpoint for smoke tests and CI.

    It has the layout of a real one (``config.json``, safetensors weights,
    tokenizer files), so ``HFVLAPolicy.from_pretrained(path, ...)`` and
    ``policy.kind=hf policy.pretrained=path`` load it like an OpenVLA-style
    checkpoint; nothing is downloaded. Its actions are meaningless until trained.

    Returns:
        ``path`` as a string.

    Examples:
        >>> import tempfile
        >>> from torchrl_ript.models.hf_vla import HFVLAConfig, HFVLAPolicy, save_tiny_llava
        >>> folder = save_tiny_llava(tempfile.mkdtemp())
        >>> policy = HFVLAPolicy.from_pretrained(folder, HFVLAConfig(lora_rank=4, head_hidden=16, scale_hidden=16))
        >>> policy.config.num_image_tokens, policy.num_parameters()["lora"] > 0
        (16, True)
    """
    # optional extra: imported only when a tiny VLA is written
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    # byte-level BPE without merges: one token per byte (ids 0-255), then the specials
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<act>"]
    for name in specials:
        vocab[name] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=["<image>", "<act>"],
    )
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                              num_attention_heads=2, image_size=image_size, patch_size=image_size // 4,
                              projection_dim=hidden)
    text = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=2, num_key_value_heads=2, vocab_size=len(vocab),
                       max_position_embeddings=256, pad_token_id=vocab["<pad>"],
                       bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_id=vocab["<image>"])
    )
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# -- the "hf" policy kind -------------------------------------------------------------------
def _build(spec: BuildSpec) -> HFVLAPolicy:
    if not spec.pretrained:
        raise ValueError(
            "policy.kind=hf needs policy.pretrained=/local/folder of a transformers VLA checkpoint "
            "(LLaVA-style: config.json, weights, tokenizer; e.g. an OpenVLA-OFT-style model). "
            "No model hub is used. For a smoke run, save a tiny random one with "
            "torchrl_ript.models.hf_vla.save_tiny_llava(folder)."
        )
    unknown = sorted(set(spec.overrides) - set(HFVLAConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown HFVLAConfig field(s) in policy.overrides: {unknown}.")
    config = HFVLAConfig(action_dim=spec.action_dim, **spec.overrides)
    return HFVLAPolicy.from_pretrained(spec.pretrained, config, image_key=tuple(spec.image_keys)[0])


def _check_scale_sampling(network, options: dict) -> None:
    if "scale_multiplier" in options:
        check_scale_multiplier(options["scale_multiplier"])


def _load(config: dict, state: dict) -> HFVLAPolicy:
    """A checkpoint holds adapters and heads; the frozen backbone is read from its folder again."""
    config = dict(config)
    folder = config.get("pretrained")
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(
            f"this hf policy checkpoint holds LoRA adapters and heads only; its backbone folder "
            f"{folder!r} is missing: copy the checkpoint folder there, or load it with "
            "HFVLAPolicy.from_pretrained(<folder>, HFVLAConfig(**payload['config'])) and "
            "load_trainable_state_dict(payload['state_dict'])."
        )
    for key in ("image_mean", "image_std"):
        config[key] = tuple(config[key])
    policy = HFVLAPolicy.from_pretrained(folder, HFVLAConfig(**legacy_scale_config(config)))
    policy.load_trainable_state_dict(state)
    return policy


HF_KIND = register_policy_kind(PolicyKind(
    name="hf",
    network_class=HFVLAPolicy,
    config_class=HFVLAConfig,
    build=_build,
    make_actor=make_regression_actor,
    sft=regression_sft,
    checkpoint_state=lambda network: network.trainable_state_dict(),
    load=_load,
    sampling_fields=("scale_multiplier",),
    check_sampling=_check_scale_sampling,
    scale_parameters=scale_head_parameters,
))
