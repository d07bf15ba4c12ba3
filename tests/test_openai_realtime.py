"""OpenAI's Realtime transcription dialect on /v1/realtime, driven by the official `openai`
Python SDK (and raw WebSockets for the beta's events and the error shape) against a real
`voxtral serve` of the small trained model, with held-out speech it knows."""

import base64
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soxr
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    SessionUpdatedEvent,
)

import voxtral_mlx
from voxtral_mlx.evaluation import score

openai = pytest.importorskip("openai")
pytestmark = [
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
    ),
    # the SDK's own use of websockets (not ours)
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager"),
]
ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
NAME = "tiny-voxtral"  # the served name of a local folder: its name
SEED = 4242


@pytest.fixture(scope="module")
def speech(tmp_path_factory, trained):
    """Held-out utterances the library transcribes word for word (so a turn's transcript
    can be checked against its words), at 16 kHz."""
    from data import write_set

    model = trained
    utterances = write_set(tmp_path_factory.mktemp("speech"), 10, SEED)
    good = [
        u for u in utterances if same_words(voxtral_mlx.transcribe(model, u.audio).text, u.text)
    ]
    assert len(good) >= 3, "the trained model should get most held-out utterances right"
    return good[:3]


@pytest.fixture(scope="module")
def port(trained_server):
    return trained_server


def same_words(hypothesis: str, reference: str) -> bool:
    return score(reference, hypothesis, normalizer="basic").word_errors == 0


def b64_24k(audio16: np.ndarray) -> str:
    audio = soxr.resample(audio16, 16000, 24000, quality="HQ")
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode()


def chunks(encoded: str, size: int = 9600) -> list[str]:
    """A base64 PCM16 string cut into chunks of `size` bytes (200 ms at 24 kHz)."""
    raw = base64.b64decode(encoded)
    return [base64.b64encode(raw[i : i + size]).decode() for i in range(0, len(raw), size)]


def client(port):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")


def session(turn_detection, rate=24000, **transcription):
    audio_in = {
        "format": {"type": "audio/pcm", "rate": rate},
        "transcription": {"model": NAME, **transcription},
        "turn_detection": turn_detection,
    }
    return {"type": "transcription", "audio": {"input": audio_in}}


def collect(conn, until, timeout=60.0):
    """Events (parsed by the SDK) until `until(events)` holds."""
    events, deadline = [], time.monotonic() + timeout
    for event in conn:
        events.append(event)
        assert event.type != "error", event
        if until(events):
            return events
        assert time.monotonic() < deadline, [e.type for e in events]
    raise AssertionError("the connection closed")


def completed(events):
    kind = "conversation.item.input_audio_transcription.completed"
    return [e for e in events if e.type == kind]


def validated(event, model):
    """The event as the SDK's own model validates it (not just constructs it)."""
    return model.model_validate(event.model_dump())


def test_manual_commits_at_24_khz_each_turn_its_own_item(port, speech):
    """turn_detection null: each commit ends a turn; each turn gets committed, its deltas
    and completed with its own words; the stream's state carries across turns."""
    with client(port).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        conn.session.update(session=session(None, delay="medium"))
        updated = validated(conn.recv(), SessionUpdatedEvent)
        audio_in = updated.session.audio.input
        assert audio_in.format.rate == 24000 and audio_in.turn_detection is None
        assert audio_in.transcription.model == NAME and audio_in.transcription.delay == "medium"
        items = []
        for u in speech[:2]:
            for piece in chunks(b64_24k(u.audio)):
                conn.input_audio_buffer.append(audio=piece)
            conn.input_audio_buffer.commit()
            n = len(items) + 1
            events = collect(conn, lambda ev, n=n: len(completed(ev)) == 1)
            committed = [e for e in events if e.type == "input_audio_buffer.committed"]
            assert len(committed) == 1
            item = validated(committed[0], InputAudioBufferCommittedEvent)
            assert item.previous_item_id == (items[-1] if items else None)
            done = validated(
                completed(events)[0], ConversationItemInputAudioTranscriptionCompletedEvent
            )
            assert done.item_id == item.item_id and n
            deltas = [
                validated(e, ConversationItemInputAudioTranscriptionDeltaEvent)
                for e in events
                if e.type == "conversation.item.input_audio_transcription.delta"
            ]
            assert deltas and all(d.item_id == item.item_id for d in deltas)
            assert "".join(d.delta for d in deltas) == done.transcript
            assert same_words(done.transcript, u.text), (done.transcript, u.text)
            assert done.usage.type == "duration" and done.usage.seconds > 0
            items.append(item.item_id)
        assert len(set(items)) == 2


def test_server_vad_finds_the_turns_and_completes_them(port, speech):
    """server_vad: speech_started / speech_stopped / committed / completed for each of two
    utterances sent back to back (with a pause) and never committed by the client; the
    times are near the words' (the utterances' own spans)."""
    gap = np.zeros(24000, np.float32)  # 1.5 s at 16 kHz
    a, b = speech[0], speech[1]
    audio = np.concatenate([a.audio, gap, b.audio, gap])
    starts = [a.spans[0][0], len(a.audio) / 16000 + len(gap) / 16000 + b.spans[0][0]]
    ends = [a.spans[-1][1], len(a.audio) / 16000 + len(gap) / 16000 + b.spans[-1][1]]
    vad = {"type": "server_vad", "silence_duration_ms": 600, "prefix_padding_ms": 0}
    with client(port).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        conn.recv()
        conn.session.update(session=session(vad))
        assert conn.recv().type == "session.updated"
        for piece in chunks(b64_24k(audio)):
            conn.input_audio_buffer.append(audio=piece)
        events = collect(conn, lambda ev: len(completed(ev)) == 2)
    kinds = [e.type for e in events if not e.type.endswith(".delta")]
    assert (
        kinds
        == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
        ]
        * 2
    ), kinds
    started = [
        validated(e, InputAudioBufferSpeechStartedEvent)
        for e in events
        if e.type.endswith("speech_started")
    ]
    stopped = [
        validated(e, InputAudioBufferSpeechStoppedEvent)
        for e in events
        if e.type.endswith("speech_stopped")
    ]
    for i, (s, e) in enumerate(zip(started, stopped, strict=True)):
        # the model's timing: within 0.3 s of the first word's start and the last word's end
        assert abs(s.audio_start_ms / 1000 - starts[i]) < 0.3, (s.audio_start_ms, starts[i])
        assert abs(e.audio_end_ms / 1000 - 0.6 - ends[i]) < 0.3, (e.audio_end_ms, ends[i])
        assert s.item_id == e.item_id
    for done, u in zip(completed(events), (a, b), strict=True):
        assert same_words(done.transcript, u.text), (done.transcript, u.text)


def raw(port, query="?intent=transcription"):
    from websockets.sync.client import connect

    conn = connect(f"ws://127.0.0.1:{port}/v1/realtime{query}", open_timeout=10, max_size=2**24)
    return conn.__enter__()


def receive(conn, timeout=60):
    return json.loads(conn.recv(timeout=timeout))


def test_beta_transcription_session_update_and_g711(port, speech, trained):
    """The beta's transcription_session.update (no intent in the URL): answered in the beta's
    shape; G.711 mu-law at 8 kHz is decoded and transcribed as the library transcribes the
    same 8 kHz audio (telephone bandwidth costs the small model words); the client commits."""
    u = speech[2]
    conn = raw(port, "")
    assert receive(conn)["type"] == "session.created"  # (vLLM's shape: the dialect is not known)
    update = {
        "type": "transcription_session.update",
        "session": {
            "input_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": NAME, "language": "en"},
            "turn_detection": None,
        },
    }
    conn.send(json.dumps(update))
    updated = receive(conn)
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_ulaw"
    # a language is accepted and said to be unused: null in the session as it is
    assert updated["session"]["input_audio_transcription"]["language"] is None
    audio8 = soxr.resample(u.audio, 16000, 8000, quality="HQ")
    conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": mu_law(audio8)}))
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    while (event := receive(conn))[
        "type"
    ] != "conversation.item.input_audio_transcription.completed":
        assert event["type"] != "error", event
    expected = voxtral_mlx.transcribe(trained, voxtral_mlx.audio.resample(audio8, 8000)).text
    assert same_words(event["transcript"], expected), (event["transcript"], expected)
    conn.close()


def test_g711_decodes_as_the_standard_encodes():
    """Both laws: decode(encode(x)) is x within one quantization step of the segment."""
    from voxtral_mlx.serve.wire import g711_to_float

    x = np.sin(np.linspace(0, 60, 8000)).astype(np.float32) * np.linspace(0, 0.9, 8000)
    y = g711_to_float(base64.b64decode(mu_law(x)), "audio/pcmu")
    assert np.all(np.abs(x - y) <= np.maximum(np.abs(x) / 16, 1 / 4096)), np.abs(x - y).max()
    z = g711_to_float(a_law(x), "audio/pcma")
    assert np.all(np.abs(x - z) <= np.maximum(np.abs(x) / 16, 1 / 2048)), np.abs(x - z).max()


def a_law(x: np.ndarray) -> bytes:
    """G.711 A-law encoding (13-bit magnitude, segment search, even bits inverted)."""
    s = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int32) >> 3
    sign = np.where(s >= 0, 0x80, 0)
    magnitude = np.minimum(np.where(s >= 0, s, -s - 1), 4095)
    exponent = np.where(
        magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4
    )
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 15
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def mu_law(x: np.ndarray) -> str:
    """G.711 mu-law encoding (the standard's segment search), base64."""
    s = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int32)
    sign = np.where(s < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(s), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 15
    code = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return base64.b64encode(code.astype(np.uint8).tobytes()).decode()


def test_errors_have_openai_shape_and_the_session_goes_on(port, speech):
    conn = raw(port)
    assert receive(conn)["type"] == "session.created"
    bad = [
        ({"type": "response.create", "event_id": "e1"}, "unknown_event"),
        (
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
                },
            },
            "model_not_found",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/flac"}}}},
            },
            "invalid_value",
        ),
        (
            {
                "type": "session.update",
                "session": {
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": -5}
                        }
                    }
                },
            },
            "invalid_value",
        ),
        ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty"),
        ({"type": "input_audio_buffer.append", "audio": "%%%"}, "invalid_audio"),
    ]
    for event, code in bad:
        conn.send(json.dumps(event))
        reply = receive(conn)
        error = validated_raw(reply, RealtimeErrorEvent)
        assert error.error.code == code, reply
        assert error.error.event_id == event.get("event_id")
    conn.send(json.dumps({"type": "input_audio_buffer.clear"}))
    assert receive(conn)["type"] == "input_audio_buffer.cleared"
    conn.close()


def validated_raw(event: dict, model):
    return model.model_validate(event)


def manual(port):
    """A raw transcription connection, client commits (turn_detection null)."""
    conn = raw(port)
    assert receive(conn)["type"] == "session.created"
    conn.send(json.dumps({"type": "session.update", "session": session(None)}))
    assert receive(conn)["type"] == "session.updated"
    return conn


def append(conn, audio16: np.ndarray) -> None:
    for piece in chunks(b64_24k(audio16)):
        conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))


def until_completed(conn, n: int, timeout: float = 60) -> list[dict]:
    events = []
    while sum(e["type"].endswith("transcription.completed") for e in events) < n:
        events.append(receive(conn, timeout))
        assert events[-1]["type"] != "error", events[-1]
    return events


def test_words_stay_in_their_turn_and_late_audio_still_completes(port, speech):
    """A commit at the very end of the last word keeps that word in its turn (its text
    comes at the word's end); a chunk that arrives just after a commit (a microphone's last
    buffer) does not stop the turn from completing; usage counts the client's audio."""
    a, b = speech[0], speech[1]
    conn = manual(port)
    cut = a.audio[: round(a.spans[-1][1] * 16000)]  # up to the end of its last word
    append(conn, cut)
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    append(conn, b.audio)
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    time.sleep(0.05)
    append(conn, np.zeros(1600, np.float32))  # 100 ms more, after the last commit
    done = completed_events(until_completed(conn, 2))
    assert same_words(done[0]["transcript"], a.text), (done[0]["transcript"], a.text)
    assert same_words(done[1]["transcript"], b.text), (done[1]["transcript"], b.text)
    assert abs(done[0]["usage"]["seconds"] - len(cut) / 16000) < 0.01
    assert abs(done[1]["usage"]["seconds"] - len(b.audio) / 16000) < 0.01
    conn.close()


def completed_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"].endswith("transcription.completed")]


def test_clear_drops_only_the_open_turn(port, speech):
    """clear right after a commit leaves the committed turn whole; clear in the middle of a
    turn drops it: no completed for it, and none of its words in the next turn, even those
    the model writes after the clear (its last words are still behind the delay)."""
    a, b, c = speech
    assert "back" in b.text.split() and "back" not in a.text.split() + c.text.split()
    conn = manual(port)
    append(conn, a.audio)
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    conn.send(json.dumps({"type": "input_audio_buffer.clear"}))
    first = completed_events(until_completed(conn, 1))[0]
    assert same_words(first["transcript"], a.text), (first["transcript"], a.text)
    # "go back" and a little more, then cleared: "go" is written by then, "back" (its text
    # comes the delay after the audio) likely not yet
    cut = max(b.spans[1][1] + 0.1, b.spans[0][1] + 0.8)
    append(conn, b.audio[: round(cut * 16000)])
    cleared = None
    while cleared is None:  # the model has written some of it: it heard it
        event = receive(conn)
        assert event["type"] != "error", event
        if event["type"].endswith("transcription.delta") and event["item_id"] != first["item_id"]:
            cleared = event["item_id"]
    conn.send(json.dumps({"type": "input_audio_buffer.clear"}))
    append(conn, c.audio)
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    events = until_completed(conn, 1)
    done = completed_events(events)[0]
    assert done["item_id"] != cleared
    assert "back" not in done["transcript"].split(), done["transcript"]
    assert not any(e.get("item_id") == cleared for e in events if "completed" in e["type"])
    conn.close()


def test_bad_values_are_errors_not_crashes(port):
    conn = raw(port)
    receive(conn)
    input_ = lambda audio_in: {"type": "session.update", "session": {"audio": {"input": audio_in}}}  # noqa: E731
    bad = [
        input_({"transcription": {"delay": ["low"]}}),
        input_({"format": {"type": ["audio/pcm"]}}),
        input_({"format": {"type": "audio/pcm", "rate": 0}}),
        input_({"format": {"type": "audio/pcmu", "rate": 16000}}),
        input_(7),
        {"type": "session.update", "session": {"audio": "x"}},
        {"type": "transcription_session.update", "session": {"input_audio_format": ["pcm16"]}},
        {"type": ["a list"], "event_id": {"not": "a string"}},
    ]
    for event in bad:
        conn.send(json.dumps(event))
        reply = receive(conn)
        error = validated_raw(reply, RealtimeErrorEvent)  # event_id null, not echoed
        assert error.error.code in ("invalid_value", "unknown_event"), reply
    conn.send(json.dumps(input_({"format": {"type": "audio/pcm", "rate": 24000}})))
    assert receive(conn)["type"] == "session.updated"  # (not the beta's: that one failed)
    conn.close()
    vllm = raw(port, "")
    receive(vllm)
    vllm.send(json.dumps({"type": "session.update", "model": None, "delay_ms": 10**400}))
    reply = receive(vllm)
    assert reply["code"] == "invalid_delay" and len(reply["error"]) < 200
    vllm.close()
