"""MLX's memory settings for a process that holds the model (voxtral_mlx/memory.py): the wired
limit only where Metal has one, the buffer cache bound everywhere, and the commands set both."""

import warnings

import mlx.core as mx
import pytest
from clirun import voxtral
from conftest import TRAINED
from mlx.utils import tree_flatten

from voxtral_mlx.errors import VoxtralWarning
from voxtral_mlx.memory import CACHE_FLOOR, settle_memory
from voxtral_mlx.session import stream_bytes
from voxtral_mlx.testing import shared_audio


@pytest.fixture
def cache_limit():
    """Restores MLX's cache limit after the test; yields a function that reads it."""
    before = mx.set_cache_limit(CACHE_FLOOR)
    mx.set_cache_limit(before)

    def read() -> int:
        limit = mx.set_cache_limit(before)
        mx.set_cache_limit(limit)
        return limit

    yield read
    mx.set_cache_limit(before)


def test_without_metal_no_wired_limit_and_a_bounded_cache(trained, cache_limit, monkeypatch):
    calls = []
    monkeypatch.setattr(mx, "set_wired_limit", calls.append)
    mx.set_cache_limit(10**12)
    settings = settle_memory(trained)
    assert not mx.metal.is_available()  # this machine: MLX on the CPU
    assert settings.wired is None and calls == []
    assert settings.cache == max(stream_bytes(trained), CACHE_FLOOR) == cache_limit()


def test_with_metal_the_working_set_is_wired(trained, cache_limit, monkeypatch):
    weights = sum(v.nbytes for _, v in tree_flatten(trained.parameters()))
    calls = []
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(mx, "set_wired_limit", lambda limit: calls.append(limit) or 0)
    for working_set, warned in [(100 * weights, False), (weights, True)]:
        info = {"max_recommended_working_set_size": working_set}
        monkeypatch.setattr(mx, "device_info", lambda info=info: info)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert settle_memory(trained).wired == working_set == calls[-1]
        assert [w.category for w in caught] == [VoxtralWarning] * warned


def test_the_commands_bound_the_cache(cache_limit):
    mx.set_cache_limit(10**12)
    done = voxtral("transcribe", shared_audio("jfk.wav"), "--model", TRAINED)
    assert done.returncode == 0, done.stderr
    assert cache_limit() == CACHE_FLOOR  # the trained model's stream_bytes is below it
