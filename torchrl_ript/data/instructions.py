"""Reading the language instruction(s) of a tensordict, one string per row."""
from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.utils import NestedKey

__all__ = ["instruction_strings"]


def instruction_strings(tensordict: TensorDictBase, key: NestedKey, batch: int) -> list[str]:
    """One instruction string per row of a ``[batch]`` tensordict.

    Accepts a ``NonTensorStack`` (one string per row), a ``NonTensorData``
    shared by all rows, or a plain string.
    """
    value = tensordict.get(key)
    data = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(data, str):
        return [data] * batch
    flat: list[str] = []

    def _flatten(item):
        if isinstance(item, (list, tuple)):
            for sub in item:
                _flatten(sub)
        else:
            flat.append(str(item))

    _flatten(data)
    if len(flat) == 1 and batch != 1:
        flat = flat * batch
    if len(flat) != batch:
        raise ValueError(
            f"expected {batch} instructions under {key!r}, got {len(flat)}: the tensordict "
            "must have exactly one batch dim with one instruction per row."
        )
    return flat
