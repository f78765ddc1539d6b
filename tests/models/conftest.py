"""Fixtures for the model tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine is shared
    yield
    torch.set_num_threads(threads)
