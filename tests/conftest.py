"""Fixtures shared by several test files."""
import pytest
import torch


@pytest.fixture
def empty_hub(tmp_path):
    """No VGG16 weights in the torch hub cache, wherever the tests run."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(previous)
