"""Tekken decoding through mistral-common, on its bundled real vocabulary."""

import numpy as np
import pytest
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from voxtral_mlx.testing import bundled_tekken_path, write_tekken
from voxtral_mlx.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_file(bundled_tekken_path())


def test_random_ids_decode_like_mistral_common(tokenizer):
    reference = Tekkenizer.from_file(bundled_tekken_path())
    rng = np.random.default_rng(0)
    for _ in range(300):
        ids = rng.integers(1000, tokenizer.vocab_size, rng.integers(1, 40)).tolist()
        assert tokenizer.decode(ids) == reference.decode(ids)


def test_special_ids_carry_no_text(tokenizer):
    rng = np.random.default_rng(1)
    for _ in range(100):
        ids = rng.integers(0, tokenizer.vocab_size, 30).tolist()
        ids[::3] = rng.integers(0, 1000, len(ids[::3])).tolist()
        text_ids = [i for i in ids if i >= 1000]
        assert tokenizer.decode(ids) == tokenizer.tekken.decode(text_ids)
    assert tokenizer.decode([1, 32, 32, 2]) == ""


def test_streaming_detokenizer_equals_decode(tokenizer):
    rng = np.random.default_rng(2)
    for _ in range(200):
        ids = rng.integers(0, tokenizer.vocab_size, 40).tolist()
        detok = tokenizer.detokenizer()
        streamed = "".join(detok.add(i) for i in ids) + detok.flush()
        assert streamed == tokenizer.decode(ids)


def test_multibyte_characters_split_across_tokens_come_out_whole(tokenizer):
    text = " 𝄞 𓀀 ꙮ naïve 日本語の文章"
    ids = tokenizer.tekken.encode(text, bos=False, eos=False)
    pieces = [tokenizer.byte_piece(i) for i in ids]
    split = [p for p in pieces if _invalid_utf8(p)]
    assert split, "precondition: some character must be split across tokens"
    # pads in between, as the model emits them, must not break a character either
    stream = [x for i in ids for x in (i, 32)]
    detok = tokenizer.detokenizer()
    chunks = [detok.add(i) for i in stream] + [detok.flush()]
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == text


def _invalid_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_voxtral_special_ids_by_name(tmp_path):
    path = tmp_path / "tekken.json"
    write_tekken(path)
    tok = Tokenizer.from_file(path)
    assert (tok.bos_id, tok.eos_id, tok.streaming_pad_id, tok.streaming_word_id) == (1, 2, 32, 33)
    assert tok.audio_section["transcription_delay_ms"] == 480
    assert tok.audio_section["streaming_n_left_pad_tokens"] == 32
