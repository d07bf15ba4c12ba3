"""Drafted pads verified in one pass (MODEL.md "Drafted pads"): not one token changes
against one position a pass, whatever the delay, the chunking, EOS or the ring."""

import numpy as np
import pytest

import voxtral_mlx
from voxtral_mlx import VALID_DELAYS_MS, Session
from voxtral_mlx.testing import shared_audio


@pytest.fixture(scope="module")
def clip():
    return voxtral_mlx.load_audio(shared_audio("librivox-0890.wav"))  # 5 s: windows crossed


def both(model, audio, **kwargs):
    """(tokens with drafts, tokens one position a pass, the drafted run's Transcript)."""
    drafted = voxtral_mlx.transcribe(model, audio, max_draft=16, **kwargs)
    single = voxtral_mlx.transcribe(model, audio, max_draft=1, **kwargs)
    assert single.stats.decoder_passes == len(single.tokens)
    return drafted.tokens, single.tokens, drafted


@pytest.mark.parametrize("delay_ms", VALID_DELAYS_MS)
def test_every_delay(model, clip, delay_ms):
    """Every delay, 80 and 2400 included; the test model's decoder window is 24 positions,
    so drafts of up to 16 wrap its ring again and again, and the right pad is drafted."""
    drafted, single, result = both(model, clip, delay_ms=delay_ms)
    assert drafted == single and len(single) > 3 * 24
    assert result.stats.decoder_passes <= len(drafted)  # this random model rarely writes pads


def test_any_chunking(model, clip):
    rng = np.random.default_rng(7)
    want = voxtral_mlx.transcribe(model, clip, max_draft=1).tokens
    for max_draft in (1, 2, 16):
        session, lo = Session(model, max_draft=max_draft), 0
        while lo < len(clip):
            n = int(rng.integers(1, 20000))
            session.feed(clip[lo : lo + n])
            lo += n
        session.finish()
        assert session.result.tokens == want, max_draft


def test_eos_inside_a_draft(official_dir, clip):
    """A model whose EOS wins often: the file stops at the same EOS with drafts."""
    model = voxtral_mlx.load(official_dir)
    embeddings = model.decoder.tok_embeddings
    embeddings.weight = embeddings.weight.at[2].multiply(25.0)
    drafted, single, _ = both(model, clip)
    assert drafted == single and drafted[-1] == 2


def test_a_model_that_mostly_writes_pads(official_dir, clip):
    """Pads win most steps (their embedding row, the tied head's, inflated): long drafts
    are accepted, and still not one token changes."""
    model = voxtral_mlx.load(official_dir)
    embeddings = model.decoder.tok_embeddings
    embeddings.weight = embeddings.weight.at[32].multiply(6.0)  # about 90 % pads
    drafted, single, result = both(model, clip)
    assert drafted == single
    pads = single.count(32) / len(single)
    assert pads > 0.6 and len(drafted) / result.stats.decoder_passes > 3, pads
