"""Mistral's speech-to-text API on `voxtral serve`, driven by the official `mistralai` SDK
(pinned in pyproject) as code written for Mistral's cloud uses it, with only `server_url`
changed: realtime (`transcribe_stream`, `connect`), uploads (`complete`, `stream`),
`models.list`; the OpenAI SDK against the same server; and our own clients (`voxtral live
--server`, `voxtral transcribe --server`) speaking the dialect. One server (a real
subprocess) of the tiny trained model, served under the real checkpoint's folder name so
that Mistral's cloud name of it is an alias; held-out espeak-ng speech. Every realtime event
the SDK yields must be one of its typed events: an UnknownRealtimeEvent (an event it could
not validate) fails the test."""

import asyncio
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import clirun
import numpy as np
import openai
import pytest
import requests
import soundfile as sf
import soxr
from test_openai_realtime import a_law
from test_server import KEY, start_server

import voxtral_mlx
from voxtral_mlx.formats import cues, render
from voxtral_mlx.serve import ServerConfig
from voxtral_mlx.serve.wire import g711_to_float

pytest.importorskip("mistralai")
from mistralai.client import Mistral  # noqa: E402
from mistralai.client.errors import SDKError  # noqa: E402
from mistralai.client.models import (  # noqa: E402
    AudioFormat,
    BaseModelCard,
    RealtimeTranscriptionError,
    RealtimeTranscriptionSessionCreated,
    RealtimeTranscriptionSessionUpdated,
    TranscriptionStreamDone,
    TranscriptionStreamLanguage,
    TranscriptionStreamSegmentDelta,
    TranscriptionStreamTextDelta,
    TurnDetectionEndEvent,
    TurnDetectionStartEvent,
)
from mistralai.extra.exceptions import (  # noqa: E402
    RealtimeTranscriptionException,
    RealtimeTranscriptionWSError,
)
from mistralai.extra.realtime import UnknownRealtimeEvent  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)
ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
NAME = "Voxtral-Mini-4B-Realtime-2602"  # the served name: the folder's
CLOUD = "voxtral-mini-transcribe-realtime-2602"  # Mistral's name of the checkpoint: an alias
SEED = 2626  # held out: the tiny model was trained on seeds 1234 to 1238
TYPED = (
    RealtimeTranscriptionSessionCreated,
    RealtimeTranscriptionSessionUpdated,
    RealtimeTranscriptionError,
    TranscriptionStreamLanguage,
    TranscriptionStreamSegmentDelta,
    TranscriptionStreamTextDelta,
    TranscriptionStreamDone,
    TurnDetectionStartEvent,
    TurnDetectionEndEvent,
)


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """The server, with a key, a backlog far below what the SDK sends at once (audio waits,
    none is dropped) and room for three sessions."""
    folder = tmp_path_factory.mktemp("models") / NAME
    folder.symlink_to(ASSET.resolve(), target_is_directory=True)
    proc, port = start_server(folder, "--api-key", KEY, "--max-backlog", "1", "--max-sessions", "3")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def url(port) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(url) -> Mistral:
    return Mistral(api_key=KEY, server_url=url)


@pytest.fixture(scope="module")
def speech(tmp_path_factory, trained) -> list[dict]:
    """Two held-out utterances: the wav file, its samples, and what the library makes of it
    (as `voxtral transcribe` does) at the default delay and at 960 ms."""
    from data import make_utterance

    rng = np.random.default_rng(SEED)
    folder = tmp_path_factory.mktemp("speech")
    out = []
    for i in range(2):
        path = folder / f"u{i}.wav"
        sf.write(path, make_utterance(rng, 3, 5).audio, 16000, subtype="PCM_16")
        out.append(
            {
                "path": path,
                "audio": voxtral_mlx.load_audio(path),
                "result": voxtral_mlx.transcribe(trained, path),
                "at_960": voxtral_mlx.transcribe(trained, path, delay_ms=960),
            }
        )
    assert all(len(s["result"].text.split()) >= 2 for s in out)
    return out


def pcm16(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2").tobytes()


async def pieces(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def typed(events: list) -> list:
    """The events, each one of the SDK's typed events (never an UnknownRealtimeEvent)."""
    unknown = [e for e in events if isinstance(e, UnknownRealtimeEvent)]
    assert not unknown, unknown
    assert all(isinstance(e, TYPED) for e in events), [type(e).__name__ for e in events]
    return events


def stream(client, data: bytes, size: int = 3200, model: str = CLOUD, **settings) -> list:
    """Every event transcribe_stream yields for `data` sent in pieces of `size` bytes."""

    async def run():
        audio = pieces(data, size)
        realtime = client.audio.realtime
        return [e async for e in realtime.transcribe_stream(audio, model=model, **settings)]

    return typed(asyncio.run(asyncio.wait_for(run(), 120)))


def of(events, kind) -> list:
    return [e for e in events if isinstance(e, kind)]


def check_utterance(events, expected, delay_ms, offset=0.0) -> TranscriptionStreamDone:
    """One utterance's events: deltas that add up to the done text, the library's; the
    transcript's subtitle cues as segment events and in done (at `offset` seconds of the
    connection's audio); the audio's whole seconds; the delay used (our extension)."""
    (done,) = of(events, TranscriptionStreamDone)
    deltas = of(events, TranscriptionStreamTextDelta)
    assert "".join(d.text for d in deltas) == done.text == expected.text
    want = [(c.start + offset, c.end + offset, c.text) for c in cues(expected.words)]
    for got in (of(events, TranscriptionStreamSegmentDelta), done.segments):
        assert [s.text for s in got] == [w[2] for w in want]
        assert [(s.start, s.end) for s in got] == [pytest.approx(w[:2], abs=1e-3) for w in want]
    assert done.usage.prompt_audio_seconds == math.ceil(expected.audio_seconds)
    assert done.additional_properties["delay_ms"] == delay_ms
    return done


def test_transcribe_stream_at_16_khz(client, speech, trained):
    """transcribe_stream with the cloud's model name, PCM16 at 16 kHz and a delay:
    session.created, session.updated, deltas and segments, then done, and the iterator ends
    by itself. The SDK sends the file at once: past the 1 s backlog the server stops reading
    until there is room, and no audio is dropped."""
    s, default = speech[0], trained.args.audio.default_delay_ms
    events = stream(
        client,
        pcm16(s["audio"]),
        audio_format=AudioFormat(encoding="pcm_s16le", sample_rate=16000),
        target_streaming_delay_ms=default,
    )
    created, updated = events[:2]
    assert isinstance(created, RealtimeTranscriptionSessionCreated)
    assert created.session.model == CLOUD and created.session.request_id
    assert created.session.audio_format.encoding == "pcm_s16le"
    assert isinstance(updated, RealtimeTranscriptionSessionUpdated)
    assert updated.session.target_streaming_delay_ms == default
    assert updated.session.diarize is False and updated.session.turn_detection is None
    done = check_utterance(events, s["result"], default)
    assert events[-1] is done and done.model == CLOUD and done.language is None
    assert isinstance(done.usage.prompt_audio_seconds, int)
    assert all(e.type != "transcription.language" for e in events)  # none set: none said


def test_transcribe_stream_at_other_rates(client, speech, trained, tmp_path):
    """PCM16 at 24 kHz cut at odd byte counts (a sample split between appends is joined),
    32-bit floats at 48 kHz and G.711 A-law at 8 kHz, resampled by the server as a stream, at
    960 ms: the text is the library's of the same audio at 960 ms."""
    s = speech[1]
    path = tmp_path / "24k.wav"
    sf.write(path, soxr.resample(s["audio"], 16000, 24000, quality="HQ"), 24000, "PCM_16")
    events = stream(
        client,
        sf.read(path, dtype="int16")[0].astype("<i2").tobytes(),
        size=4801,
        audio_format=AudioFormat(encoding="pcm_s16le", sample_rate=24000),
        target_streaming_delay_ms=960,
    )
    assert events[1].session.audio_format.sample_rate == 24000
    check_utterance(events, voxtral_mlx.transcribe(trained, path, delay_ms=960), 960)
    audio48 = soxr.resample(s["audio"], 16000, 48000, quality="HQ").astype("<f4")
    events = stream(
        client,
        audio48.tobytes(),
        size=19200,
        audio_format=AudioFormat(encoding="pcm_f32le", sample_rate=48000),
        target_streaming_delay_ms=960,
    )
    want = voxtral_mlx.transcribe(trained, audio48, sample_rate=48000, delay_ms=960)
    check_utterance(events, want, 960)
    alaw = a_law(soxr.resample(s["audio"], 16000, 8000, quality="HQ"))
    events = stream(
        client,
        alaw,
        size=1600,
        audio_format=AudioFormat(encoding="pcm_alaw", sample_rate=8000),
        target_streaming_delay_ms=960,
    )
    heard = g711_to_float(alaw, "audio/pcma")  # (what the server decodes)
    check_utterance(events, voxtral_mlx.transcribe(trained, heard, 960, sample_rate=8000), 960)


def test_language_and_turn_detection(client, speech):
    """language: echoed (Voxtral detects none) as transcription.language before the first
    text, and in done. turn_detection: turn.start / turn.end from the model's own output,
    alternating, the first at the first word's start."""
    s = speech[0]
    events = stream(
        client, pcm16(s["audio"]), language="en", turn_detection={"min_silence_ms": 300}
    )
    assert events[1].session.language == "en"
    assert events[1].session.turn_detection.min_silence_ms == 300
    kinds = [type(e) for e in events]
    first_text = kinds.index(TranscriptionStreamTextDelta)
    assert kinds.index(TranscriptionStreamLanguage) == first_text - 1 or (
        kinds[first_text - 1] is TurnDetectionStartEvent
    )
    assert of(events, TranscriptionStreamLanguage)[0].audio_language == "en"
    assert len(of(events, TranscriptionStreamLanguage)) == 1
    done = check_utterance(events, s["result"], s["result"].delay_ms)
    assert done.language == "en"
    turns = [e for e in events if isinstance(e, (TurnDetectionStartEvent, TurnDetectionEndEvent))]
    assert turns and len(turns) % 2 == 0
    assert all(isinstance(t, TurnDetectionStartEvent) for t in turns[::2])
    assert all(t.end_reason == "threshold" for t in turns[1::2])
    times = [t.time_s for t in turns]
    assert times == sorted(times)
    words = s["result"].words
    assert abs(times[0] - words[0].start) < 0.3 and times[-1] >= words[-1].end - 0.1


def test_utterances_on_one_connection(client, speech):
    """connect() as Pipecat and LiveKit use it: A, flush -> A's done; the delay changed
    between utterances; B, flush -> B's done (its times counted from the connection's
    start); a settings change while audio waits for its flush is refused and changes
    nothing; bad events get error events and the connection goes on; a flush with no audio
    -> an empty done; end -> an empty done, and the server closes."""
    a, b = speech

    async def run():
        conn = await client.audio.realtime.connect(model=NAME)
        events = conn.events()
        seen = []

        async def until(kind):
            got = []
            while not got or not isinstance(got[-1], kind):
                got.append(await asyncio.wait_for(events.__anext__(), 60))
            seen.extend(got)
            return typed(got)

        await until(RealtimeTranscriptionSessionCreated)
        for piece in range(0, len(pcm := pcm16(a["audio"])), 6400):
            await conn.send_audio(pcm[piece : piece + 6400])
        await conn.flush_audio()
        first = await until(TranscriptionStreamDone)
        await conn.update_session(target_streaming_delay_ms=960)
        (updated,) = await until(RealtimeTranscriptionSessionUpdated)
        await conn.send_audio(pcm16(b["audio"][:8000]))
        await conn.update_session(language="en")
        (refused,) = await until(RealtimeTranscriptionError)
        await conn._websocket.send(json.dumps({"type": "input_audio.commit"}))
        (unknown,) = await until(RealtimeTranscriptionError)
        bad = {"type": "input_audio.append", "audio": "%%%"}
        await conn._websocket.send(json.dumps(bad))
        (not_base64,) = await until(RealtimeTranscriptionError)
        await conn.send_audio(pcm16(b["audio"][8000:]))
        await conn.flush_audio()
        second = await until(TranscriptionStreamDone)
        await conn.flush_audio()
        (empty,) = await until(TranscriptionStreamDone)
        await conn.end_audio()
        (last,) = await until(TranscriptionStreamDone)
        with pytest.raises(StopAsyncIteration):  # the server closed the connection
            await asyncio.wait_for(events.__anext__(), 10)
        return first, updated, refused, unknown, not_base64, second, empty, last

    first, updated, refused, unknown, not_base64, second, empty, last = asyncio.run(run())
    check_utterance(first, a["result"], a["result"].delay_ms)
    assert of(first, TranscriptionStreamDone)[0].model == NAME
    assert updated.session.target_streaming_delay_ms == 960
    assert refused.error.code == 400 and "flush" in refused.error.message
    assert unknown.error.code == 400 and "input_audio.commit" in unknown.error.message
    assert not_base64.error.code == 400 and "base64" in not_base64.error.message
    offset = len(a["audio"]) / 16000
    done = check_utterance(second, b["at_960"], 960, offset)
    assert done.language is None  # the refused update changed nothing
    for nothing in (empty, last):
        assert nothing.text == "" and nothing.segments == []
        assert nothing.usage.prompt_audio_seconds == 0


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"diarize": True}, "diarize"),
        ({"speaker_references": {"alice": "UklGRg=="}}, "speaker_references"),
        ({"target_streaming_delay_ms": 500}, "80, 160, 240"),
        ({"audio_format": AudioFormat(encoding="opus", sample_rate=48000)}, "pcm_s16le"),
        ({"audio_format": AudioFormat(encoding="pcm_s16le", sample_rate=4000)}, "8000"),
        ({"turn_detection": {"end_threshold": 2.0}}, "end_threshold"),
    ],
)
def test_settings_refused_as_error_events(client, settings, words):
    """A setting this server cannot honour: the SDK's typed error event (code 400, the
    message says why), at which transcribe_stream stops."""
    events = stream(client, bytes(3200), **settings)
    error = events[-1]
    assert isinstance(error, RealtimeTranscriptionError), events
    assert error.error.code == 400 and words in error.error.message
    assert not of(events, TranscriptionStreamDone)


def test_wrong_key_wrong_model_and_too_many_sessions(client, url):
    """The SDK's own exceptions: a wrong key (the handshake's HTTP 401; 401 on uploads and
    /v1/models), a model this server does not serve (an error event with code 404 before
    session.created, raised by connect(); 404 on uploads); past --max-sessions, 429."""
    wrong = Mistral(api_key="wrong", server_url=url)

    async def connect(sdk, model=NAME):
        return await sdk.audio.realtime.connect(model=model)

    with pytest.raises(RealtimeTranscriptionException, match="HTTP 401"):
        asyncio.run(connect(wrong))
    with pytest.raises(SDKError) as caught:
        wrong.audio.transcriptions.complete(model=NAME, file={"content": b"x", "file_name": "a"})
    assert caught.value.status_code == 401
    with pytest.raises(SDKError) as caught:
        wrong.models.list()
    assert caught.value.status_code == 401
    with pytest.raises(RealtimeTranscriptionWSError) as caught:
        asyncio.run(connect(client, "whisper-1"))
    assert caught.value.code == 404 and str(caught.value) == "The model `whisper-1` does not exist."
    with pytest.raises(SDKError) as caught:
        client.audio.transcriptions.complete(
            model="whisper-1", file={"content": b"x", "file_name": "a.wav"}
        )
    assert caught.value.status_code == 404

    deadline = time.monotonic() + 10  # (the connections before close on the server's side)
    while sessions(url) and time.monotonic() < deadline:
        time.sleep(0.05)

    async def full():
        held = [await connect(client) for _ in range(3)]
        try:
            with pytest.raises(RealtimeTranscriptionWSError) as caught:
                await connect(client)
            return caught.value
        finally:
            for conn in held:
                await conn.close()

    refused = asyncio.run(full())
    assert refused.code == 429 and "3 sessions" in str(refused)


def sessions(url: str) -> int:
    auth = {"Authorization": f"Bearer {KEY}"}
    return requests.get(f"{url}/health", headers=auth, timeout=10).json()["sessions"]


def upload(speech_item) -> dict:
    return {"content": speech_item["path"].read_bytes(), "file_name": speech_item["path"].name}


def test_complete_in_each_granularity(client, speech):
    """complete(): the library's text; segments per timestamp_granularities (none: none;
    segment: the subtitle cues; word: the words; both: the cues, and the words beside them);
    language echoed, temperature accepted; usage in whole seconds."""
    s = speech[0]
    expected = s["result"]
    file = upload(s)
    got = {
        str(g): client.audio.transcriptions.complete(
            model=CLOUD, file=file, timestamp_granularities=g, language="en", temperature=0.0
        )
        for g in (None, ["segment"], ["word"], ["segment", "word"])
    }
    for reply in got.values():
        assert reply.text == expected.text and reply.model == CLOUD and reply.language == "en"
        assert reply.usage.prompt_audio_seconds == math.ceil(expected.audio_seconds)
        assert reply.additional_properties["delay_ms"] == expected.delay_ms
    cue_spans = [(c.text, c.start, c.end) for c in cues(expected.words)]
    word_spans = [(w.text, w.start, w.end) for w in expected.words]
    assert got["None"].segments is None
    assert [(x.text, x.start, x.end) for x in got["['segment']"].segments] == cue_spans
    assert [(x.text, x.start, x.end) for x in got["['word']"].segments] == word_spans
    both = got["['segment', 'word']"]
    assert [(x.text, x.start, x.end) for x in both.segments] == cue_spans
    words = both.additional_properties["words"]
    assert [(w["word"], w["start"], w["end"]) for w in words] == word_spans


def test_complete_refusals(client, speech, url):
    """diarize=True, speaker_references and file_url: 400, with the reason."""
    file = upload(speech[0])
    for fields, words in (
        ({"diarize": True, "file": file}, "diarize"),
        ({"speaker_references": {"alice": "UklGRg=="}, "file": file}, "speaker_references"),
        ({"file_url": "https://example.com/a.wav"}, "file_url"),
    ):
        with pytest.raises(SDKError) as caught:
            client.audio.transcriptions.complete(model=NAME, **fields)
        assert caught.value.status_code == 400 and words in caught.value.body


def test_stream_uploads(client, speech):
    """stream(): only the SDK's typed events (each with its `event:` line), the language
    first, deltas as the file is decoded that add up to the done text, the segments, done;
    the stream ends by itself."""
    s = speech[1]
    events = list(
        client.audio.transcriptions.stream(
            model=NAME, file=upload(s), language="en", timestamp_granularities=["segment"]
        )
    )
    data = [e.data for e in events]
    assert [e.event for e in events] == [d.type for d in data]
    assert all(isinstance(d, TYPED) for d in data), data
    assert isinstance(data[0], TranscriptionStreamLanguage) and data[0].audio_language == "en"
    check_utterance(data, s["result"], s["result"].delay_ms)
    assert data[-1].model == NAME and data[-1].language == "en"


def test_models_list_and_both_sdks_on_one_server(client, url, speech):
    """models.list() reads the served model as a BaseModelCard (its aliases: Mistral's cloud
    name); OpenAI's SDK reads the same list and transcribes on the same server, in its own
    shapes, as Mistral's does in Mistral's."""
    (card,) = client.models.list().data
    assert isinstance(card, BaseModelCard) and card.id == NAME and card.aliases == [CLOUD]
    assert card.capabilities.audio_transcription_realtime
    assert card.audio_transcription_capabilities.timestamp_granularities == ["segment", "word"]
    other = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in other.models.list().data] == [NAME]
    s = speech[0]
    wav = s["path"].read_bytes()
    plain = other.audio.transcriptions.with_raw_response.create(model=CLOUD, file=("a.wav", wav))
    body = json.loads(plain.text)
    assert body["text"] == s["result"].text and body["model"] == CLOUD
    assert body["usage"] == {
        "type": "duration",
        "seconds": pytest.approx(s["result"].audio_seconds),
    }
    deltas = other.audio.transcriptions.create(model=NAME, file=("a.wav", wav), stream=True)
    assert [e.type for e in deltas][-1] == "transcript.text.done"
    mistral = client.audio.transcriptions.complete(model=NAME, file=upload(s))
    assert mistral.text == body["text"]


def test_the_cloud_name_is_an_alias_of_this_checkpoint_only():
    names = ServerConfig("mistralai/Voxtral-Mini-4B-Realtime-2602").model_names
    assert names == ("mistralai/Voxtral-Mini-4B-Realtime-2602", CLOUD)
    quantized = ServerConfig(
        "mlx-community/Voxtral-Mini-4B-Realtime-2602-4bit", served_model_name="v"
    )
    assert quantized.model_names == ("v", "mlx-community/Voxtral-Mini-4B-Realtime-2602-4bit", CLOUD)
    assert CLOUD not in ServerConfig(str(ASSET)).model_names


# --- our clients ---


def test_the_protocol_and_key_a_client_picks(monkeypatch):
    from voxtral_cli.remote import http_url, realtime_url, server_key, server_protocol

    for address, kind in (
        ("http://mac:8000", "vllm"),
        ("ws://mac:8000/v1/realtime", "vllm"),
        ("http://mac:8000/v1/audio/transcriptions/realtime", "mistral"),
        ("http://mac:8000/v1/audio/transcriptions", "mistral"),
        ("https://api.mistral.ai", "mistral"),
        ("https://notmistral.ai", "vllm"),
    ):
        assert server_protocol(address) == kind, address
    assert server_protocol("https://api.mistral.ai", "vllm") == "vllm"
    base = "https://proxy/x/v1/audio/transcriptions/realtime"
    assert http_url(base, "/v1/models") == "https://proxy/x/v1/models"
    assert realtime_url(base, "/v1/audio/transcriptions/realtime") == (
        "wss://proxy/x/v1/audio/transcriptions/realtime"
    )
    monkeypatch.setenv("VOXTRAL_API_KEY", "ours")
    monkeypatch.setenv("MISTRAL_API_KEY", "theirs")
    assert server_key("given", "mistral") == "given"
    assert (server_key(None, "mistral"), server_key(None, "vllm")) == ("theirs", "ours")
    monkeypatch.setenv("MISTRAL_API_KEY", "")
    assert server_key(None, "mistral") == "ours"


def voxtral(*args, **env) -> subprocess.CompletedProcess:
    """The command (in this process), with no key but those given."""
    return clirun.voxtral(*args, env={"VOXTRAL_API_KEY": "", "MISTRAL_API_KEY": "", **env})


def test_live_through_the_mistral_dialect(url, speech, tmp_path):
    """`voxtral live --server URL/v1/audio/transcriptions/realtime` (Mistral's, from the URL;
    the key from MISTRAL_API_KEY): the library's text, its words and times in .jsonl and
    .srt, the delay asked for; a wrong key is one line naming MISTRAL_API_KEY."""
    s = speech[1]
    server = f"{url}/v1/audio/transcriptions/realtime"
    outputs = {"x.jsonl": ["--delay", "960"], "x.srt": []}
    for name, extra in outputs.items():
        out = tmp_path / name
        done = voxtral(
            "live",
            "--server",
            server,
            "--input",
            str(s["path"]),
            "--fast",
            "-o",
            str(out),
            *extra,
            MISTRAL_API_KEY=KEY,
        )
        assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    at_960 = s["at_960"]
    assert lines[-1]["type"] == "done" and lines[-1]["text"] == at_960.text
    assert lines[-1]["delay_ms"] == 960
    words = [(x["text"], x["start"], x["end"]) for x in lines if x["type"] == "word"]
    assert words == [(w.text, w.start, w.end) for w in at_960.words]
    assert (tmp_path / "x.srt").read_text() == render(s["result"], "srt", "x")
    refused = voxtral("live", "--server", server, "--input", str(s["path"]), MISTRAL_API_KEY="no")
    assert refused.returncode == 1 and "MISTRAL_API_KEY" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_transcribe_through_the_mistral_dialect(url, speech, tmp_path):
    """`voxtral transcribe --server URL --protocol mistral`: Mistral's upload form with word
    timestamps; the srt and json files are the library's."""
    s = speech[0]
    done = voxtral(
        "transcribe",
        "--server",
        url,
        "--protocol",
        "mistral",
        "--api-key",
        KEY,
        str(s["path"]),
        "-f",
        "all",
        "-o",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    stem = tmp_path / s["path"].stem
    assert Path(f"{stem}.srt").read_text() == render(s["result"], "srt", str(s["path"]))
    body = json.loads(Path(f"{stem}.json").read_text())
    assert body["text"] == s["result"].text and body["delay_ms"] == s["result"].delay_ms
    assert [(w["text"], w["start"], w["end"]) for w in body["words"]] == [
        (w.text, w.start, w.end) for w in s["result"].words
    ]


def test_the_protocol_option_on_the_command_line(speech):
    """--help shows it (Rich renders the help: no markup in it); a bad name, or one without
    --server, is a command-line error."""
    for command in ("live", "transcribe"):
        shown = voxtral(command, "--help")
        assert shown.returncode == 0 and "--protocol" in shown.stdout, shown.stderr
        assert "MISTRAL_API_KEY" in shown.stdout
    wav = str(speech[0]["path"])
    bad = voxtral("transcribe", "--server", "http://127.0.0.1:9", "--protocol", "grpc", wav)
    assert bad.returncode == 2 and "choose auto, vllm, mistral" in bad.stderr
    alone = voxtral("live", "--protocol", "mistral", "--input", wav)
    assert alone.returncode == 2 and "--protocol applies to --server" in alone.stderr


def test_a_done_keeps_the_end_of_a_long_utterance():
    """An utterance never flushed may last for hours: its done carries its last
    MAX_DONE_CHARS characters (under the SDK's 1 MiB a message), and no more is kept."""
    from voxtral_mlx.serve.mistral.dialect import MAX_DONE_CHARS, Utterance
    from voxtral_mlx.serve.mistral.settings import Settings

    utterance = Utterance(Settings(model="m", delay_ms=480), offset=0.0)
    pieces = [f" word{i}" for i in range(60_000)]
    for piece in pieces:
        utterance.add_text(piece)
        assert utterance.chars <= 2 * MAX_DONE_CHARS + len(piece)
    assert utterance.transcript == "".join(pieces)[-MAX_DONE_CHARS:]
