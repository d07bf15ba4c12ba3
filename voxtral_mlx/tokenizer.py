"""Tekken detokenization through mistral-common, including a streaming detokenizer.

Ids below `num_special_tokens` (1000) are control tokens (BOS 1, EOS 2, STREAMING_PAD 32,
...) and carry no text. Text is the UTF-8 decoding of the concatenated byte pieces of all
other ids, so a character split across two tokens comes out whole even when pads fall
between them.
"""

from __future__ import annotations

import codecs
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from .errors import VoxtralError

# Documented ids of the Voxtral Realtime tekken.json (MODEL.md "Token ids"); used only when
# a tokenizer file does not name them (mistral-common's older bundled vocabularies).
STREAMING_PAD_ID = 32
STREAMING_WORD_ID = 33


class Tokenizer:
    def __init__(self, tekken: Tekkenizer):
        self.tekken = tekken
        self.num_special_tokens = tekken.num_special_tokens
        self.bos_id = tekken.bos_id
        self.eos_id = tekken.eos_id
        self.streaming_pad_id = self._special("[STREAMING_PAD]", STREAMING_PAD_ID)
        self.streaming_word_id = self._special("[STREAMING_WORD]", STREAMING_WORD_ID)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        try:
            return cls(Tekkenizer.from_file(path))
        except (OSError, ValueError, KeyError, AssertionError) as e:
            raise VoxtralError(f"cannot read tokenizer {path}: {e}") from e

    def _special(self, name: str, fallback: int) -> int:
        try:
            return self.tekken.get_special_token(name)
        except Exception:
            return fallback

    @property
    def vocab_size(self) -> int:
        return self.tekken.n_words

    @property
    def audio_section(self) -> dict[str, Any] | None:
        """The `audio` section of tekken.json (delay, left pad, mel settings), or None."""
        audio = self.tekken.audio
        if audio is None:
            return None
        section = asdict(audio)
        section["audio_encoding_config"] = asdict(audio.encoding_config)
        return section

    def prompt(self, prompt_length: int) -> list[int]:
        """The decoder's prompt: BOS, then STREAMING_PAD over the left pad and the delay
        (`Schedule.prompt_length` ids)."""
        return [self.bos_id] + [self.streaming_pad_id] * (prompt_length - 1)

    def is_special(self, token_id: int) -> bool:
        return token_id < self.num_special_tokens

    def byte_piece(self, token_id: int) -> bytes:
        if self.is_special(token_id):
            return b""
        return self.tekken.id_to_byte_piece(token_id, SpecialTokenPolicy.IGNORE)

    def decode(self, ids: list[int]) -> str:
        """Text of a whole id sequence (special ids dropped, invalid UTF-8 replaced)."""
        return self.tekken.decode([i for i in ids if not self.is_special(i)])

    def detokenizer(self) -> StreamingDetokenizer:
        return StreamingDetokenizer(self)


class StreamingDetokenizer:
    """Turns ids into text one at a time, holding back an incomplete UTF-8 character
    until its last byte arrives. The concatenation of everything `add` and `flush`
    return equals `Tokenizer.decode` of all the ids."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.byte_piece(token_id))

    def flush(self) -> str:
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text
