"""`voxtral meeting`: the conversation logic (voxtral_mlx.meeting) on constructed words, then
the command itself with the tiny trained model (tests/assets/tiny-voxtral) on held-out
espeak speech (training/data.py): two replayed files, every output format, Ctrl+C, the
echo of the call in the microphone, the system audio of a PulseAudio server."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import voxtral_mlx
from voxtral_mlx import Session, WordDone
from voxtral_mlx.meeting import ECHO_WINDOW, SETTLE_SECONDS, Conversation, Echo, Said, same_word
from voxtral_mlx.words import Word

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
SEED = 4321  # held out: training used 1234 to 1238
RATE = 16000

espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)


def said(items) -> list[tuple[str, str]]:
    return [(i.speaker, i.word.text) for i in items if isinstance(i, Said)]


def test_words_come_out_in_time_order_once_settled():
    talk = Conversation("you", "them")
    talk.add("them", Word("hello", 0.2, 0.5))
    talk.add("them", Word("there", 1.4, 1.7))
    talk.advance("them", 1.2)
    assert talk.take() == []  # "you" may still say something before 0.2 s
    talk.advance("you", 0.5)
    assert said(talk.take()) == [("them", "hello")]
    talk.add("you", Word("hi", 0.9, 1.1))
    talk.advance("you", 1.5)
    assert talk.take() == []  # "hi" waits for "them" settled to 0.9 + the window
    talk.advance("them", 2.0)
    assert said(talk.take()) == [("you", "hi"), ("them", "there")]
    talk.add("you", Word("bye", 2.5, 2.7))
    talk.advance("you", math.inf)  # ended: "bye" waits only for "them"
    assert talk.take() == []
    talk.advance("them", 2.5 + ECHO_WINDOW)
    assert said(talk.take()) == [("you", "bye")]
    assert talk.text("you") == "hi bye" and talk.text("them") == "hello there"


def test_a_microphone_word_waits_for_the_echo_window():
    talk = Conversation("you", "them")
    talk.add("you", Word("yes", 1.0, 1.2))
    talk.advance("you", 3.0)
    talk.advance("them", 1.0 + ECHO_WINDOW - 0.01)
    assert talk.take() == []
    talk.advance("them", 1.0 + ECHO_WINDOW)
    assert said(talk.take()) == [("you", "yes")]


def test_ties_go_to_you_first():
    talk = Conversation("you", "them")
    talk.add("them", Word("a", 1.0, 1.1))
    talk.add("you", Word("b", 1.0, 1.1))
    for speaker in ("you", "them"):
        talk.advance(speaker, math.inf)
    assert said(talk.take()) == [("you", "b"), ("them", "a")]


def test_the_echo_of_the_call_is_dropped_from_you():
    """The same word within the window, before or after (case and punctuation aside), is the
    call's; further away, or another word, it is yours."""
    talk = Conversation("you", "them")
    for word in [Word("Three.", 1.0, 1.3), Word("four", 2.0, 2.3), Word("go", 5.0, 5.2)]:
        talk.add("them", word)
    mine = [
        Word("three", 1.0 + ECHO_WINDOW, 1.6),  # the echo, as late as the window allows
        Word("four", 2.0 - 0.1, 2.2),  # early: the models' timing error
        Word("five", 2.1, 2.4),  # another word, at the same time
        Word("three", 3.5, 3.8),  # the same word, later: said again
        Word("go", 5.0 + ECHO_WINDOW + 0.08, 5.8),  # outside the window
    ]
    for word in mine:
        talk.add("you", word)
    for speaker in ("you", "them"):
        talk.advance(speaker, math.inf)
    items = talk.take()
    echoes = [(i.word.text, i.heard.start) for i in items if isinstance(i, Echo)]
    assert echoes == [("three", 1.0), ("four", 2.0)]
    assert [w for s, w in said(items) if s == "you"] == ["five", "three", "go"]
    assert talk.text("you") == "five three go"
    assert same_word("«Yes!»", "yes") and not same_word("yes", "yet")


def test_two_speakers_need_two_names():
    with pytest.raises(ValueError, match="two names"):
        Conversation("Ann", "Ann")


@pytest.fixture(scope="module")
def trained():
    return voxtral_mlx.load(ASSET)


@pytest.fixture(scope="module")
def utterances():
    from data import make_utterance

    rng = np.random.default_rng(SEED)
    return [make_utterance(rng) for _ in range(16)]


@espeak
def test_a_pause_settles_the_last_word(trained, utterances):
    """With settle_seconds a speaker's last word is out once a pause follows it, before
    the stream ends; the words and their times are those of a session without it, and
    `settled_seconds` never passes a word still to come."""
    for u in utterances[:4]:
        audio = np.concatenate([u.audio, np.zeros(RATE, np.float32)])  # then 1 s of silence
        plain, settling = Session(trained), Session(trained, settle_seconds=SETTLE_SECONDS)
        plain.feed(audio)
        plain.finish()
        words, settled = [], []
        for lo in range(0, len(audio), 1600):
            for event in settling.feed(audio[lo : lo + 1600]):
                if isinstance(event, WordDone):
                    words.append(event.word)
                    assert event.word.start >= max(settled, default=0.0)
            settled.append(settling.settled_seconds)
        assert words == plain.result.words and words  # every word out before the end
        assert settling.settled_seconds > words[-1].start
        settling.finish()
        assert settling.result.words == words and settling.result.text == plain.result.text
        assert settling.settled_seconds == math.inf
