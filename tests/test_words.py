"""Word timings on constructed token sequences (MODEL.md "Word timings")."""

import pytest

from voxtral_mlx.config import AudioArgs, Schedule
from voxtral_mlx.testing import bundled_tekken_path
from voxtral_mlx.tokenizer import Tokenizer
from voxtral_mlx.words import Word, words_from_tokens, words_with_tokens

PAD = 32
AT_480 = Schedule(AudioArgs(), 480)  # 32 slots of left pad, 6 of delay
AT_960 = Schedule(AudioArgs(), 960)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(bundled_tekken_path())


def ids(tok, text):
    return tok.tekken.encode(text, bos=False, eos=False)


def test_step_time_rule():
    # position 32 + 6 (left pad + delay at 480 ms) speaks about t = 0
    assert AT_480.step_time(38) == 0.0
    assert AT_480.step_time(50) == pytest.approx(0.96)
    assert AT_960.step_time(44) == 0.0


def test_words_from_constructed_positions(tok):
    hello, world = ids(tok, " hello"), ids(tok, " world")
    assert len(hello) == 1 and len(world) == 1
    # first output at position 38 (prompt of 39 at 480 ms): t(p) = (p - 38) * 0.08
    tokens = [PAD] * 5 + hello + [PAD] * 3 + world + [PAD, 2]
    words = words_from_tokens(tokens, 38, tok, AT_480, duration=10.0)
    assert words == [Word("hello", 0.4, 0.48), Word("world", 0.72, 0.8)]


def test_multi_token_word_spans_all_its_steps(tok):
    word = ids(tok, " extraordinarily")
    assert len(word) > 1
    tokens = [PAD] * 2 + [word[0], PAD] + word[1:] + [PAD]
    (w,) = words_from_tokens(tokens, 38, tok, AT_480)
    last = 2 + len(word)  # index of the last piece (one pad sits inside the word)
    assert w.text == "extraordinarily"
    assert w.start == pytest.approx(0.16) and w.end == pytest.approx((last + 1) * 0.08)


def test_words_clamped_to_the_audio(tok):
    tokens = ids(tok, " early") + [PAD] * 20 + ids(tok, " late")
    # " early" at position 30 -> t = -0.64 s; " late" at position 51 -> t = 1.04 s
    words = words_from_tokens(tokens, 30, tok, AT_480, duration=1.0)
    assert words == [Word("early", 0.0, 0.0), Word("late", 1.0, 1.0)]


def test_delay_shifts_times_back(tok):
    tokens = [PAD] * 10 + ids(tok, " go")
    at_480 = words_from_tokens(tokens, 38, tok, AT_480)[0]
    at_960 = words_from_tokens(tokens, 44, tok, AT_960)[0]
    assert at_480 == at_960


WORD_MARK = 33


def test_streaming_word_marker_gives_the_start(tok):
    """[STREAMING_WORD] at the word's start (+ delay), its text at its end (+ delay)."""
    hello, world = ids(tok, " hello"), ids(tok, " world")
    # t(p) = (p - 38) * 0.08 with the first output at position 38
    tokens = [PAD, WORD_MARK, PAD, PAD] + hello + [PAD, WORD_MARK] + [PAD] * 4 + world + [PAD]
    words = words_from_tokens(tokens, 38, tok, AT_480, duration=10.0)
    assert words == [Word("hello", 0.08, 0.32), Word("world", 0.48, 0.88)]


def test_marker_with_no_text_yet_closes_the_previous_word(tok):
    one, two = ids(tok, " one"), ids(tok, " two")
    tokens = one + [WORD_MARK] + two
    words = words_from_tokens(tokens, 38, tok, AT_480)
    assert [w.text for w in words] == ["one", "two"]
    assert words[0] == Word("one", 0.0, 0.08) and words[1] == Word("two", 0.08, 0.16)


def test_words_with_their_text_token_ids(tok):
    """Each word's ids are its text pieces; markers, pads and EOS belong to no word, and
    neither does white space after the last one."""
    extra, one, space = ids(tok, " extraordinarily"), ids(tok, " one"), ids(tok, " ")
    tokens = [PAD, WORD_MARK] + extra[:1] + [PAD] + extra[1:] + [WORD_MARK, PAD] + one + space
    pairs = words_with_tokens(tokens + [PAD, 2], 38, tok, AT_480)
    assert [(w.text, i) for w, i in pairs] == [("extraordinarily", extra), ("one", one)]
    assert [w for w, _ in pairs] == words_from_tokens(tokens + [PAD, 2], 38, tok, AT_480)


def test_a_pause_settles_the_word_in_progress(tok):
    """WordTracker.settle: a word whose text has had nothing added for the pause is complete
    without the next word; before that, and for a marker with no text yet, it is not. Where
    the word is open from (`open_since`) is its marker's time, else its first piece's."""
    from voxtral_mlx.words import WordTracker

    hello = ids(tok, " hello")
    tracker = WordTracker(tok, AT_480)  # t(p) = (p - 38) * 0.08
    assert tracker.open_since is None
    tracker.add(39, WORD_MARK)  # the marker at 0.08 s
    assert tracker.open_since == pytest.approx(0.08)
    assert tracker.settle(45, 0.16) is None  # a marker alone is no word
    assert tracker.add(42, hello[0]) is None  # its text over [0.32, 0.40]
    assert tracker.open_since == pytest.approx(0.08)
    assert tracker.settle(44, 0.24) is None  # 0.16 s of pads after it: not yet
    assert tracker.settle(45, 0.24) == Word("hello", 0.08, 0.32)
    assert tracker.open_since is None and tracker.flush() is None
    # text that continues a settled word later starts one of its own, open from its piece
    piece = ids(tok, "lo")[0]
    tracker.add(50, piece)
    assert tracker.open_since == pytest.approx(0.96)
    assert tracker.flush().text == tok.byte_piece(piece).decode()
