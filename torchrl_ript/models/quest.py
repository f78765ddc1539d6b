"""QueST-style token policy: FSQ skill autoencoder + autoregressive skill prior.

Design (after Mete et al., "QueST: Self-Supervised Skill Abstractions for
Learning Continuous Control", NeurIPS 2024; own implementation):

* :class:`SkillAutoencoder` turns an action chunk ``[B, T, A]`` (``T=32``)
  into ``L = T / downsample`` skill tokens (``L=8``) with a *causal* encoder
  (causal self-attention, then causal strided 1-D convolutions, so token
  ``j`` only sees actions ``<= (j+1)*downsample - 1``), finite scalar
  quantization (FSQ levels ``[8, 5, 5, 5]`` = 1000 codes, from
  ``vector-quantize-pytorch``) and a causal decoder (position queries with
  causal self-attention, cross-attending only to the tokens that cover
  their past).
* :class:`SkillPrior`: a GPT over ``[context tokens, <start>, s_0 ..
  s_{L-2}]`` whose outputs at the start/skill positions are the logits of
  ``s_0 .. s_{L-1}``; the context is the task embedding + one token per
  camera + a proprio token (:class:`~torchrl_ript.models.common.ObservationEncoder`).
* :class:`QuestPolicy` (the actor's network) *samples the tokens itself*,
  autoregressively (with a key/value cache), and writes both
  ``"action_tokens"`` and ``"logits"``;
  when ``"action_tokens"`` is already in the input (scoring) it
  teacher-forces them instead. The logits written are those of one
  teacher-forced pass on the final token sequence, so the log-prob the actor
  writes while acting equals ``actor.get_dist(td).log_prob(td["action_tokens"])``
  recomputed by the loss. Because the network writes the tokens, TorchRL's
  ``ProbabilisticActor`` does not resample them (its ``_requires_sample`` is
  ``False``) and only scores them.
* Only the tokens the executed actions depend on are drawn and scored
  (``decode="executed"``, the default): the decoder is causal, so the first
  ``n_exec`` actions read only the first
  :meth:`SkillAutoencoder.tokens_for_actions` tokens (2 of 8 with chunk 32,
  downsample 4, ``n_exec`` 8). The later tokens would cost sampling steps
  and, scored, give PPO credit to tokens that never act.
  ``decode="full"`` draws and scores all ``L`` tokens (SFT always trains
  the prior on all of them).
* :func:`make_quest_actor` builds that actor; :class:`QuestDecoder` is the
  rollout decoder (tokens -> first ``n_exec`` actions of the chunk).
* SFT: :func:`train_quest_autoencoder` (stage 1, L1 reconstruction), then
  :func:`train_quest_prior` (stage 2, token NLL, autoencoder frozen);
  :func:`train_quest` runs both. A fine-tune from a pretrained policy runs
  stage 2 only (the skill tokenizer is kept).

The policy kind ``"quest"`` (:mod:`torchrl_ript.models.registry`) is
registered at the end of this module.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import ProbabilisticActor

from torchrl_ript.models.bc import masked_l1, train_bc
from torchrl_ript.models.common import EncoderConfig, ObservationEncoder, call_flat, count_parameters
from torchrl_ript.models.registry import BuildSpec, PolicyBundle, PolicyKind, SFTOptions, register_policy_kind
from torchrl_ript.modules.actors import make_rollout_policy
from torchrl_ript.modules.distributions import TokenCategorical

__all__ = [
    "QuestConfig",
    "SkillAutoencoder",
    "SkillPrior",
    "QuestPolicy",
    "QuestDecoder",
    "QuestActor",
    "make_quest_actor",
    "quest_config",
    "quest_autoencoder_loss",
    "quest_prior_loss",
    "train_quest_autoencoder",
    "train_quest_prior",
    "train_quest",
    "QUEST_KIND",
]


@dataclass
class QuestConfig:
    """All sizes of a QueST policy (see :func:`quest_config` for presets)."""

    action_dim: int = 4
    chunk_size: int = 32
    downsample: int = 4
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    n_exec: int = 8
    # autoencoder
    ae_dim: int = 32
    ae_heads: int = 2
    ae_encoder_layers: int = 1
    ae_decoder_layers: int = 1
    ae_conv_kernel: int = 5
    # prior
    prior_dim: int = 32
    prior_heads: int = 2
    prior_layers: int = 1
    dropout: float = 0.0
    # sampling (part of the scored distribution, see TokenCategorical)
    temperature: float = 1.0
    top_k: int | None = None
    # "executed": draw and score only the tokens the n_exec executed actions depend on;
    # "full": all n_tokens (comparison; the rollout still executes n_exec actions)
    decode: str = "executed"
    kv_cache: bool = True  # cached autoregressive sampling (same logits as the uncached passes)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        self.fsq_levels = tuple(self.fsq_levels)
        if self.chunk_size % self.downsample:
            raise ValueError("chunk_size must be a multiple of downsample.")
        if self.downsample & (self.downsample - 1):
            raise ValueError("downsample must be a power of 2 (stride-2 convolutions).")
        if not 1 <= self.n_exec <= self.chunk_size:
            raise ValueError("n_exec must be in [1, chunk_size].")
        if self.decode not in ("executed", "full"):
            raise ValueError(f"decode must be 'executed' or 'full', got {self.decode!r}.")
        if self.encoder.embed_dim != self.prior_dim:
            self.encoder.embed_dim = self.prior_dim

    @property
    def n_tokens(self) -> int:
        return self.chunk_size // self.downsample

    @property
    def vocab_size(self) -> int:
        return math.prod(self.fsq_levels)

    def to_dict(self) -> dict:
        return asdict(self)


def quest_config(preset: str = "small", **overrides) -> QuestConfig:
    """Preset sizes: ``"tiny"`` (tests), ``"small"`` (CPU, ~2M params),
    ``"paper"`` (~20M, QueST-like widths). ``overrides`` replace fields;
    ``encoder=dict(...)`` overrides encoder fields."""
    enc_over = overrides.pop("encoder", {}) or {}
    if isinstance(enc_over, EncoderConfig):
        enc_over = asdict(enc_over)
    if preset == "tiny":
        enc = dict(image_size=32, resnet_widths=(8, 16), resnet_blocks=(1, 1), state_hidden=32)
        cfg = dict(
            chunk_size=8, downsample=2, fsq_levels=(8, 5, 5, 5), n_exec=2,
            ae_dim=32, ae_heads=2, ae_encoder_layers=1, ae_decoder_layers=1, ae_conv_kernel=3,
            prior_dim=32, prior_heads=2, prior_layers=1,
        )
    elif preset == "small":
        enc = dict(image_size=64, resnet_widths=(16, 32, 64, 128), resnet_blocks=(1, 1, 1, 1), state_hidden=128)
        cfg = dict(
            chunk_size=32, downsample=4, fsq_levels=(8, 5, 5, 5), n_exec=8,
            ae_dim=128, ae_heads=4, ae_encoder_layers=2, ae_decoder_layers=2,
            prior_dim=128, prior_heads=4, prior_layers=4,
        )
    elif preset == "paper":
        enc = dict(image_size=128, resnet_widths=(32, 64, 128, 256), resnet_blocks=(2, 2, 2, 2),
                   state_hidden=256, language="minilm")
        cfg = dict(
            chunk_size=32, downsample=4, fsq_levels=(8, 5, 5, 5), n_exec=8,
            ae_dim=256, ae_heads=4, ae_encoder_layers=2, ae_decoder_layers=4,
            prior_dim=384, prior_heads=6, prior_layers=6,
        )
    else:
        raise ValueError(f"unknown preset {preset!r}: use 'tiny', 'small' or 'paper'.")
    enc.update(enc_over)
    cfg.update(overrides)
    return QuestConfig(encoder=EncoderConfig(**enc), **cfg)


def _causal_mask(n: int, device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


class _CausalConv(nn.Module):
    """1-D convolution padded on the left only (output ``t`` sees inputs ``<= t``)."""

    def __init__(self, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.pad = kernel - stride if stride > 1 else kernel - 1
        self.conv = nn.Conv1d(dim, dim, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T]
        return self.conv(nn.functional.pad(x, (self.pad, 0)))


class SkillAutoencoder(nn.Module):
    """Causal action-chunk autoencoder with FSQ skill tokens.

    ``encode(actions [B, T, A]) -> token ids [B, L]``,
    ``decode(ids [B, L]) -> actions [B, T, A]``, ``forward`` returns the
    reconstruction (straight-through FSQ) and the ids.
    """

    def __init__(self, config: QuestConfig) -> None:
        super().__init__()
        from vector_quantize_pytorch import FSQ  # optional extra (quest): only when a QueST policy is built

        c = config
        self.config = c
        d = c.ae_dim
        self.in_proj = nn.Linear(c.action_dim, d)
        self.enc_pos = nn.Parameter(torch.randn(1, c.chunk_size, d) * 0.02)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, c.ae_heads, 4 * d, c.dropout, batch_first=True, norm_first=True),
            c.ae_encoder_layers,
            enable_nested_tensor=False,
        )
        n_down = int(math.log2(c.downsample))
        self.down = nn.ModuleList(_CausalConv(d, max(c.ae_conv_kernel, 2), 2) for _ in range(n_down))
        self.fsq = FSQ(levels=list(c.fsq_levels), dim=d)
        self.token_pos = nn.Parameter(torch.randn(1, c.n_tokens, d) * 0.02)
        self.query_pos = nn.Parameter(torch.randn(1, c.chunk_size, d) * 0.02)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, c.ae_heads, 4 * d, c.dropout, batch_first=True, norm_first=True),
            c.ae_decoder_layers,
        )
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.action_dim))
        # query t may read token j iff token j covers only actions <= t
        t = torch.arange(c.chunk_size)[:, None]
        j = torch.arange(c.n_tokens)[None, :]
        memory_mask = (j + 1) * c.downsample - 1 > t
        memory_mask[:, 0] = False  # every query sees the first token
        self.register_buffer("memory_mask", memory_mask, persistent=False)
        # [n - 1]: the leading tokens that queries < n read (a running max: queries are causal)
        last_read = (~memory_mask).long().cumsum(1).argmax(1)
        self._tokens_read = (last_read.cummax(0).values + 1).tolist()

    def _latents(self, actions: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(actions) + self.enc_pos
        x = self.encoder(x, mask=_causal_mask(x.shape[1], x.device), is_causal=True)
        x = x.transpose(1, 2)
        for i, conv in enumerate(self.down):
            x = conv(x)
            if i < len(self.down) - 1:
                x = nn.functional.gelu(x)
        return x.transpose(1, 2)  # [B, L, d]

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, L]`` (long) of action chunks ``[B, T, A]``."""
        _, ids = self.fsq(self._latents(actions))
        return ids.long()

    def tokens_for_actions(self, n_actions: int) -> int:
        """How many leading tokens the first ``n_actions`` decoded actions read.

        Read off the decoder's own cross-attention mask (its self-attention
        over queries is causal): the actions ``< n_actions`` depend on no
        later token.
        """
        if not 1 <= n_actions <= self.config.chunk_size:
            raise ValueError(f"n_actions must be in [1, {self.config.chunk_size}], got {n_actions}.")
        return self._tokens_read[n_actions - 1]

    def _decode_codes(self, codes: torch.Tensor, n_actions: int | None = None) -> torch.Tensor:
        T = self.config.chunk_size if n_actions is None else n_actions
        n = codes.shape[1]
        memory = codes + self.token_pos[:, :n]
        queries = self.query_pos[:, :T].expand(codes.shape[0], -1, -1)
        x = self.decoder(
            queries, memory, tgt_mask=_causal_mask(T, codes.device), memory_mask=self.memory_mask[:T, :n],
            tgt_is_causal=True,
        )
        return self.out(x)

    def decode(self, ids: torch.Tensor, n_actions: int | None = None) -> torch.Tensor:
        """Action chunks ``[B, T, A]`` of token ids ``[B, L]``.

        With ``n_actions``: only the first ``n_actions`` actions ``[B,
        n_actions, A]``, from ids holding at least the
        :meth:`tokens_for_actions` leading tokens (the same actions as the full
        decode: queries are causal and masked from later tokens).
        """
        needed = self.config.n_tokens if n_actions is None else self.tokens_for_actions(n_actions)
        if ids.shape[-1] < needed:
            raise ValueError(
                f"decoding {n_actions or self.config.chunk_size} actions needs the first {needed} tokens, got "
                f"{ids.shape[-1]}: pass n_actions <= the executed actions of the policy that drew them "
                "(or draw all tokens with decode='full')."
            )
        codes = self.fsq.indices_to_codes(ids[..., :needed].long())
        return self._decode_codes(codes, n_actions)

    def forward(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, ids = self.fsq(self._latents(actions))
        return self._decode_codes(codes), ids.long()


class SkillPrior(nn.Module):
    """GPT over ``[context, <start>, skill tokens]`` -> per-position logits."""

    def __init__(self, config: QuestConfig, n_context: int) -> None:
        super().__init__()
        c = config
        d = c.prior_dim
        self.vocab_size = c.vocab_size
        self.start_token = c.vocab_size  # extra id
        self.tok_emb = nn.Embedding(c.vocab_size + 1, d)
        self.pos = nn.Parameter(torch.randn(1, n_context + c.n_tokens, d) * 0.02)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, c.prior_heads, 4 * d, c.dropout, batch_first=True, norm_first=True),
            c.prior_layers,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c.vocab_size)
        self.n_context = n_context
        self.n_tokens = c.n_tokens
        self.dropout = c.dropout  # the cached step has none: sampling falls back while it is active

    def forward(self, context: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """``context [B, C, d]``, ``tokens_in [B, L]`` = ``<start>, s_0 .. s_{L-2}``
        -> logits ``[B, L, V]`` of ``s_0 .. s_{L-1}``."""
        x = torch.cat([context, self.tok_emb(tokens_in)], dim=1) + self.pos[:, : context.shape[1] + tokens_in.shape[1]]
        n = x.shape[1]
        x = self.blocks(x, mask=_causal_mask(n, x.device), is_causal=True)
        return self.head(self.norm(x[:, self.n_context :]))

    def sample(
        self, context: torch.Tensor, n_tokens: int, pick: Callable[[torch.Tensor], torch.Tensor], *, cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ``n_tokens`` tokens autoregressively; ``pick(logits [B, V]) -> ids [B]``.

        Returns the tokens ``[B, n]`` and their logits ``[B, n, V]``, which
        equal the teacher-forced ``forward`` on those tokens (within float
        rounding). ``cache=True`` keeps each layer's keys and values, so every
        step runs one new position through the blocks instead of the whole
        prefix; it falls back to the uncached passes where the two would
        differ (dropout active in training mode).
        """
        if not 1 <= n_tokens <= self.n_tokens:
            raise ValueError(f"n_tokens must be in [1, {self.n_tokens}], got {n_tokens}.")
        if cache and not (self.training and self.dropout):
            return self._sample_cached(context, n_tokens, pick)
        start = torch.full((context.shape[0], 1), self.start_token, dtype=torch.long, device=context.device)
        tokens_in = start
        for i in range(n_tokens):
            logits = self(context, tokens_in)  # causal: position i sees <start>, s_0 .. s_{i-1}
            step = pick(logits[:, i])
            tokens_in = torch.cat([tokens_in, step[:, None]], dim=1)
        return tokens_in[:, 1:], logits

    def _sample_cached(self, context, n_tokens, pick):
        C = context.shape[1]
        start = torch.full((context.shape[0], 1), self.start_token, dtype=torch.long, device=context.device)
        x = torch.cat([context, self.tok_emb(start)], dim=1) + self.pos[:, : C + 1]
        caches: list = [None] * len(self.blocks.layers)
        tokens, logits = [], []
        for i in range(n_tokens):
            for j, layer in enumerate(self.blocks.layers):
                x, caches[j] = _cached_layer_step(layer, x, caches[j])
            logits.append(self.head(self.norm(x[:, -1])))
            tokens.append(pick(logits[-1]))
            x = self.tok_emb(tokens[-1])[:, None] + self.pos[:, C + 1 + i : C + 2 + i]
        return torch.stack(tokens, 1), torch.stack(logits, 1)


def _cached_layer_step(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One pre-norm ``TransformerEncoderLayer`` (eval) over new positions ``x [B, T, d]``
    that attend causally to themselves and to every cached position."""
    if not layer.norm_first:
        raise ValueError("the cached prior step implements pre-norm layers (norm_first=True) only.")
    attn = layer.self_attn
    B, T, d = x.shape
    heads = attn.num_heads
    q, k, v = nn.functional.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.view(B, T, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
    # a new single position sees every cached one; a first block of positions is causal in itself
    h = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=cache is None and T > 1)
    x = x + attn.out_proj(h.transpose(1, 2).reshape(B, T, d))
    x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
    return x, (k, v)


class QuestPolicy(TensorDictModuleBase):
    """The QueST network: observations -> skill tokens + their logits.

    Reads the canonical VLA observation keys. Writes ``tokens_key``
    (``[B, n]``) and ``logits_key`` (``[B, n, V]``), ``n`` =
    :attr:`scored_tokens` (the tokens the executed actions read; all ``L``
    with ``decode="full"``). If ``tokens_key`` is in the input it is
    teacher-forced (scoring); otherwise tokens are drawn autoregressively:
    sampled (``ExplorationType.RANDOM``, with the config's temperature /
    top-k) or greedy (any other exploration type, the ``ProbabilisticActor``
    default).

    Examples:
        >>> from tensordict import TensorDict
        >>> policy = QuestPolicy(quest_config("tiny", action_dim=4))
        >>> td = TensorDict({
        ...     ("observation", "image"): torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
        ...     ("observation", "state"): torch.zeros(2, 8),
        ...     "language_instruction": "open the drawer"}, [2])
        >>> policy(td)["logits"].shape  # tiny: 2 executed actions of a chunk of 8 read token 0 only
        torch.Size([2, 1, 1000])
        >>> policy.config.decode = "full"
        >>> policy(td.exclude("action_tokens"))["logits"].shape
        torch.Size([2, 4, 1000])
    """

    def __init__(
        self,
        config: QuestConfig,
        *,
        tokens_key: NestedKey = "action_tokens",
        logits_key: NestedKey = "logits",
    ) -> None:
        super().__init__()
        self.config = config
        self.obs_encoder = ObservationEncoder(config.encoder)
        self.autoencoder = SkillAutoencoder(config)
        self.prior = SkillPrior(config, self.obs_encoder.n_tokens)
        self.tokens_key = tokens_key
        self.logits_key = logits_key
        self.in_keys = self.obs_encoder.in_keys
        self.out_keys = [logits_key, tokens_key]

    # -- pieces ---------------------------------------------------------------
    def context(self, tensordict: TensorDictBase) -> torch.Tensor:
        return self.obs_encoder(tensordict)

    def _shift(self, tokens: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(tokens[:, :1], self.prior.start_token)
        return torch.cat([start, tokens[:, :-1]], dim=1)

    def token_logits(self, context: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, L, V]`` of ``tokens [B, L]``."""
        return self.prior(context, self._shift(tokens.long()))

    @property
    def scored_tokens(self) -> int:
        """Tokens drawn and scored per decision: those the ``n_exec`` executed
        actions read (``decode="executed"``), or all ``n_tokens`` (``"full"``)."""
        c = self.config
        return c.n_tokens if c.decode == "full" else self.autoencoder.tokens_for_actions(c.n_exec)

    def generate(self, context: torch.Tensor, *, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Autoregressive tokens ``[B, scored_tokens]`` and their logits.

        The logits are those of the steps that drew the tokens, which equal
        the teacher-forced logits the loss recomputes (the prior is causal).
        """
        c = self.config

        def pick(logits: torch.Tensor) -> torch.Tensor:
            dist = TokenCategorical(logits[:, None], temperature=c.temperature, top_k=c.top_k)
            return (dist.sample() if sample else dist.deterministic_sample)[:, 0]

        return self.prior.sample(context, self.scored_tokens, pick, cache=c.kv_cache)

    def decode(self, tokens: torch.Tensor, n_actions: int | None = None) -> torch.Tensor:
        """Decoded chunk ``[B, chunk, A]`` of tokens ``[B, L]``, or its first
        ``n_actions`` actions (see :meth:`SkillAutoencoder.decode`)."""
        return self.autoencoder.decode(tokens, n_actions)

    # -- TensorDictModule -----------------------------------------------------
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return call_flat(tensordict, self._forward, self.out_keys)

    def _forward(self, tensordict: TensorDictBase) -> None:
        context = self.context(tensordict)
        tokens = tensordict.get(self.tokens_key, None)
        if tokens is not None:
            logits = self.token_logits(context, tokens.to(context.device))
        else:
            sample = exploration_type() is ExplorationType.RANDOM
            tokens, logits = self.generate(context, sample=sample)
            tensordict.set(self.tokens_key, tokens)
        tensordict.set(self.logits_key, logits)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``autoencoder`` / ``prior`` (prior + observation encoders)."""
        ae = list(self.autoencoder.parameters())
        ids = {id(p) for p in ae}
        return {"autoencoder": ae, "prior": [p for p in self.parameters() if id(p) not in ids]}

    def num_parameters(self) -> dict[str, int]:
        return {
            "obs_encoder": count_parameters(self.obs_encoder),
            "autoencoder": count_parameters(self.autoencoder),
            "prior": count_parameters(self.prior),
            "total": count_parameters(self),
        }


class QuestDecoder(TensorDictModuleBase):
    """Rollout decoder: ``"action_tokens"`` -> ``"action"`` ``[B, n_exec, A]``.

    Decodes only the ``n_exec`` executed actions, from the tokens they read
    (:meth:`SkillAutoencoder.decode` with ``n_actions``; the whole chunk with
    ``decode="full"``). Carries no gradient (the loss scores tokens, not
    actions).
    """

    def __init__(
        self,
        policy: QuestPolicy,
        *,
        n_exec: int | None = None,
        tokens_key: NestedKey = "action_tokens",
        action_key: NestedKey = "action",
        clamp: tuple[float, float] | None = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.policy = policy
        self.n_exec = n_exec if n_exec is not None else policy.config.n_exec
        self.clamp = clamp
        self.in_keys = [tokens_key]
        self.out_keys = [action_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tokens = tensordict.get(self.in_keys[0])
        # decode="full" decodes the whole chunk (as before executed-only decoding); same executed actions
        n_actions = None if self.policy.config.decode == "full" else self.n_exec
        with torch.no_grad():
            action = self.policy.decode(tokens.reshape(-1, tokens.shape[-1]), n_actions)[:, : self.n_exec]
        if self.clamp is not None:
            action = action.clamp(*self.clamp)
        tensordict.set(self.out_keys[0], action.reshape(*tokens.shape[:-1], *action.shape[1:]))
        return tensordict


class QuestActor(ProbabilisticActor):
    """Token actor whose network samples the tokens (autoregressive prior).

    Identical to :func:`torchrl_ript.modules.make_token_actor`'s actor
    (``TokenCategorical`` over ``"logits"``, log-prob under
    ``"action_log_prob"``), except that acting (``forward``) always draws
    fresh tokens: a stale ``"action_tokens"`` entry carried over from the
    previous step is dropped first. ``get_dist`` (what the PPO loss calls)
    teacher-forces the tokens present in the tensordict.
    """

    def forward(self, tensordict: TensorDictBase, *args, **kwargs) -> TensorDictBase:
        tokens_key = self.module[0].tokens_key
        if tokens_key in tensordict.keys(include_nested=True):
            tensordict.del_(tokens_key)
        return super().forward(tensordict, *args, **kwargs)


class _LiveSampling(Mapping):
    """``{"temperature", "top_k"}`` read from a QueST config at every access.

    The actor's ``distribution_kwargs``: the network samples with its config's
    values and the scored ``TokenCategorical`` reads the very same fields, so
    changing them (e.g. ``set_sampling``) at any time changes both at once.
    """

    _FIELDS = ("temperature", "top_k")

    def __init__(self, config: QuestConfig) -> None:
        self._config = config

    def __getitem__(self, key: str):
        if key not in self._FIELDS:
            raise KeyError(key)
        return getattr(self._config, key)

    def __iter__(self):
        return iter(self._FIELDS)

    def __len__(self) -> int:
        return len(self._FIELDS)

    def __repr__(self) -> str:
        return repr(dict(self))


def make_quest_actor(policy: QuestPolicy, *, log_prob_key: NestedKey = "action_log_prob") -> QuestActor:
    """The RIPT token actor around a :class:`QuestPolicy` network.

    Temperature / top-k have one owner, ``policy.config``: the network's
    autoregressive sampling and the scored ``TokenCategorical`` both read it
    when they run, so they agree whenever the options are changed.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> policy = QuestPolicy(quest_config("tiny"))
        >>> actor = make_quest_actor(policy)
        >>> policy.config.top_k = 5  # after the actor was built
        >>> actor[-1].distribution_kwargs["top_k"]  # the scored distribution's option
        5
    """
    return QuestActor(
        policy,
        in_keys={"logits": policy.logits_key},
        out_keys=[policy.tokens_key],
        distribution_class=TokenCategorical,
        distribution_kwargs=_LiveSampling(policy.config),
        return_log_prob=True,
        log_prob_key=log_prob_key,
    )


# -- SFT ------------------------------------------------------------------------------
def quest_autoencoder_loss(policy: QuestPolicy, batch: TensorDictBase, *, mask_key: NestedKey | None = None) -> torch.Tensor:
    """Stage 1: L1 reconstruction of the action chunk (QueST trains on full,
    padded chunks; pass ``mask_key`` to ignore the padding)."""
    actions = batch.get("action")
    recon, _ = policy.autoencoder(actions)
    mask = batch.get(mask_key) if mask_key is not None else None
    return masked_l1(recon, actions, mask)


def quest_prior_loss(policy: QuestPolicy, batch: TensorDictBase) -> torch.Tensor:
    """Stage 2: cross-entropy of the (frozen) autoencoder's tokens under the prior."""
    with torch.no_grad():
        tokens = policy.autoencoder.encode(batch.get("action"))
    logits = policy.token_logits(policy.context(batch), tokens)
    return nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())


def train_quest_autoencoder(policy: QuestPolicy, batches, *, steps: int = 1000, lr: float = 1e-4, **kwargs) -> list[float]:
    """QueST stage 1: autoencoder by L1 reconstruction."""
    return train_bc(
        policy, lambda b: quest_autoencoder_loss(policy, b), policy.autoencoder.parameters(), batches,
        steps=steps, lr=lr, desc="quest autoencoder", **kwargs,
    )


def train_quest_prior(policy: QuestPolicy, batches, *, steps: int = 1000, lr: float = 1e-4, **kwargs) -> list[float]:
    """QueST stage 2: prior + observation encoders by token NLL, autoencoder frozen."""
    return train_bc(
        policy, lambda b: quest_prior_loss(policy, b), policy.parameter_groups()["prior"], batches,
        steps=steps, lr=lr, desc="quest prior", **kwargs,
    )


def train_quest(policy: QuestPolicy, batches, *, ae_steps: int = 1000, prior_steps: int = 1000, lr: float = 1e-4, **kwargs) -> dict[str, list[float]]:
    """Both QueST stages; returns ``{"autoencoder": [...], "prior": [...]}``."""
    return {
        "autoencoder": train_quest_autoencoder(policy, batches, steps=ae_steps, lr=lr, **kwargs),
        "prior": train_quest_prior(policy, batches, steps=prior_steps, lr=lr, **kwargs),
    }


# -- the "quest" policy kind ----------------------------------------------------------------
def _build(spec: BuildSpec) -> QuestPolicy:
    return QuestPolicy(quest_config(spec.preset, action_dim=spec.action_dim, encoder=spec.encoder(), **spec.overrides))


def _sft(bundle: PolicyBundle, batches, options: SFTOptions) -> dict[str, list[float]]:
    """Autoencoder (``autoencoder_steps``, default ``steps``), then the prior (``steps``)."""
    return train_quest(
        bundle.network, batches, ae_steps=options.autoencoder_steps or options.steps, prior_steps=options.steps,
        lr=options.lr, progress=options.progress,
    )


def _finetune(bundle: PolicyBundle, batches, options: SFTOptions) -> dict[str, list[float]]:
    """The prior only: the target's actions are written in the pretrained skill tokens."""
    return {"prior": train_quest_prior(bundle.network, batches, steps=options.steps, lr=options.lr,
                                       progress=options.progress)}


def _check_sampling(network: QuestPolicy, options: dict) -> None:
    top_k = options.get("top_k")
    if top_k is not None and not 1 <= int(top_k) <= network.config.vocab_size:
        raise ValueError(f"top_k must be in [1, {network.config.vocab_size}] (the token vocabulary), got {top_k}.")
    if options.get("temperature", 1.0) <= 0:
        raise ValueError(f"temperature must be > 0, got {options['temperature']}.")


QUEST_KIND = register_policy_kind(PolicyKind(
    name="quest",
    network_class=QuestPolicy,
    config_class=QuestConfig,
    build=_build,
    make_actor=make_quest_actor,
    make_policy=lambda network, actor: make_rollout_policy(actor, QuestDecoder(network)),
    sampled_key="action_tokens",
    n_exec=lambda network: network.config.n_exec,
    sft=_sft,
    finetune=_finetune,
    sampling_fields=("temperature", "top_k"),
    check_sampling=_check_sampling,
))
