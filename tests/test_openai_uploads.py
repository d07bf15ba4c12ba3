"""POST /v1/audio/transcriptions through the official OpenAI SDK, against a real `voxtral
serve` of the tiny trained model (tests/assets/tiny-voxtral) on held-out espeak-ng speech:
every response format, validated with the SDK's own models and equal to the library's
transcript; streamed text events; the form's fields and its refusals."""

import io
import json
import shutil
import time
import zlib

import numpy as np
import openai
import pytest
import requests
import soundfile as sf
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
)

import voxtral_mlx
from voxtral_mlx.formats import StrippedStream, cues, render

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)
SEED = 4242  # held out: the tiny model was trained on seeds 1234 to 1238
PAUSE_SECONDS = 1.5  # between the two utterances: longer than a cue's gap, so two segments
NAME = "held-out.wav"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> bytes:
    """Two held-out utterances (about 8 s), a PCM16 WAV file's bytes."""
    from data import RATE, make_utterance

    rng = np.random.default_rng(SEED)
    first, second = make_utterance(rng), make_utterance(rng)
    pause = np.zeros(int(PAUSE_SECONDS * RATE), np.float32)
    out = io.BytesIO()
    sf.write(out, np.concatenate([first.audio, pause, second.audio]), RATE, "PCM_16", format="WAV")
    return out.getvalue()


@pytest.fixture(scope="module")
def expected(trained, speech, tmp_path_factory):
    """What the library makes of the same file, at the server's default delay."""
    path = tmp_path_factory.mktemp("speech") / NAME
    path.write_bytes(speech)
    return voxtral_mlx.transcribe(trained, path)


@pytest.fixture(scope="module")
def port(trained_server):
    return trained_server


@pytest.fixture(scope="module")
def client(port) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model_name(client) -> str:
    (model,) = client.models.list().data
    return model.id


def uploads(port) -> int:
    return requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["uploads"]


def test_every_response_format_through_the_sdk(client, model_name, port, speech, expected, trained):
    """Each format is the library's transcript; verbose_json passes the SDK's own models,
    strictly, with honest segment fields."""

    def create(fmt):
        return client.audio.transcriptions.with_raw_response.create(
            model=model_name, file=(NAME, speech), response_format=fmt
        )

    replies = {fmt: create(fmt) for fmt in ("json", "text", "srt", "vtt", "verbose_json")}
    body = json.loads(replies["json"].text)
    assert Transcription.model_validate(body, strict=True).text == expected.text
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(expected.audio_seconds)}
    assert replies["text"].parse() == expected.text + "\n"
    assert replies["srt"].parse() == render(expected, "srt", NAME)
    assert replies["vtt"].parse() == render(expected, "vtt", NAME)

    body = json.loads(replies["verbose_json"].text)
    verbose = TranscriptionVerbose.model_validate(body, strict=True)
    assert verbose.text == expected.text and "two" in expected.text.split()  # real words
    assert verbose.language == "und"  # none asked, none detected
    default = requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["delay_ms"]
    assert body["delay_ms"] == expected.delay_ms == default
    assert verbose.duration == pytest.approx(expected.audio_seconds)
    assert verbose.usage.seconds == pytest.approx(expected.audio_seconds)
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (w.text, w.start, w.end) for w in expected.words
    ]
    want = cues(expected.words)
    assert len(want) == 2  # the pause splits them
    assert [(s.id, s.start, s.end, s.text) for s in verbose.segments] == [
        (i, c.start, c.end, c.text) for i, c in enumerate(want)
    ]
    tokenizer = trained.tokenizer
    for segment in verbose.segments:
        assert segment.seek == round(segment.start * 100)  # (an int: the model is strict)
        assert tokenizer.decode(segment.tokens).split() == segment.text.split()
        assert segment.temperature == 0.0
        assert segment.avg_logprob == 0.0 and segment.no_speech_prob == 0.0
        data = segment.text.encode()
        assert segment.compression_ratio == pytest.approx(len(data) / len(zlib.compress(data)))
    text_ids = [t for t in expected.tokens if not tokenizer.is_special(t)]
    assert [t for s in verbose.segments for t in s.tokens] == text_ids


def test_openai_fields_are_accepted(client, model_name, speech, expected):
    """language is reported back (not detected, not used); prompt, temperature,
    timestamp_granularities[] and chunking_strategy change nothing."""
    verbose = client.audio.transcriptions.create(
        model=model_name,
        file=(NAME, speech),
        response_format="verbose_json",
        language="en",
        prompt="numbers and commands",
        temperature=0.8,
        timestamp_granularities=["word"],
        chunking_strategy={"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 200},
    )
    assert verbose.language == "en" and verbose.text == expected.text
    assert verbose.words and verbose.segments  # both, whatever the granularities say


def test_stream_through_the_sdk(client, model_name, speech, expected, trained):
    """stream=True, as json and as text: text deltas, then done, every event valid for the
    SDK's models; the deltas add up to the done text, which is the non-streamed text."""

    def events(fmt):
        stream = client.audio.transcriptions.create(
            model=model_name, file=(NAME, speech), response_format=fmt, stream=True
        )
        return [event.to_dict() for event in stream]

    streams = [events("json"), events("text")]
    prompt = trained.args.schedule(expected.delay_ms).prompt_length
    for *deltas, done in streams:
        assert len(deltas) >= 2
        deltas = [TranscriptionTextDeltaEvent.model_validate(d, strict=True) for d in deltas]
        done = TranscriptionTextDoneEvent.model_validate(done, strict=True)
        assert "".join(d.delta for d in deltas) == done.text == expected.text
        usage = done.usage
        assert (usage.input_tokens, usage.output_tokens) == (prompt, len(expected.tokens))
        assert usage.total_tokens == prompt + len(expected.tokens)


def test_a_stream_goes_out_while_decoding_and_stops_with_its_client(
    client, model_name, port, speech
):
    """The first delta comes while the file is still being decoded; a client that leaves
    stops the decoding at once."""
    samples, rate = sf.read(io.BytesIO(speech), dtype="int16")
    long = io.BytesIO()
    sf.write(long, np.tile(samples, 20), rate, "PCM_16", format="WAV")  # 2.7 minutes
    stream = client.audio.transcriptions.create(
        model=model_name, file=("long.wav", long.getvalue()), stream=True
    )
    first = next(iter(stream))
    assert first.type == "transcript.text.delta" and uploads(port) == 1
    stream.close()
    deadline = time.monotonic() + 3
    while uploads(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uploads(port) == 0


def test_delay_ms_and_the_served_model_by_default(client, speech, trained, tmp_path):
    """Our delay_ms field: the transcript is the library's at that delay, and says which
    delay it used. An empty model name means the served model."""
    verbose = client.audio.transcriptions.create(
        model="", file=(NAME, speech), response_format="verbose_json", extra_body={"delay_ms": 960}
    )
    path = tmp_path / NAME
    path.write_bytes(speech)
    want = voxtral_mlx.transcribe(trained, path, delay_ms=960)
    assert verbose.to_dict()["delay_ms"] == 960
    assert verbose.text == want.text
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (w.text, w.start, w.end) for w in want.words
    ]


def test_refusals_in_openai_shape(client, model_name, port, speech):
    """Every refusal comes before decoding, as the SDK's own exceptions."""

    def create(**fields):
        fields = {"model": model_name, "file": (NAME, speech), **fields}
        return client.audio.transcriptions.create(**fields)

    with pytest.raises(openai.NotFoundError) as caught:
        create(model="whisper-1")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["message"] == "The model `whisper-1` does not exist."
    for fmt in ("verbose_json", "srt"):
        with pytest.raises(openai.BadRequestError) as caught:
            create(stream=True, response_format=fmt)
        assert "json or text" in caught.value.body["message"]
    for delay in (100, "soon"):
        with pytest.raises(openai.BadRequestError) as caught:
            create(extra_body={"delay_ms": delay})
        message = caught.value.body["message"]
        assert caught.value.code == "invalid_delay" and "\n" not in message
        assert ", ".join(map(str, voxtral_mlx.VALID_DELAYS_MS)) in message
    with pytest.raises(openai.BadRequestError) as caught:
        create(language="english")
    assert caught.value.code == "invalid_language"
    with pytest.raises(openai.BadRequestError) as caught:
        create(include=["logprobs"])
    assert "logprobs" in caught.value.body["message"]
    url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
    for fields in (
        {"response_format": "xml"},
        {"stream": "maybe"},
        {"temperature": "abc"},
        {"temperature": "7"},
        {"timestamp_granularities[]": "bogus"},
        {"include[]": "bogus"},
    ):
        reply = requests.post(url, files={"file": (NAME, speech)}, data=fields, timeout=30)
        assert reply.status_code == 400 and reply.json()["error"]["message"]
    assert uploads(port) == 0


def test_stripped_deltas_add_up_to_the_stripped_text():
    deltas = ["", " ", " two", "  ", " fi", "ve ", "\n", "", " six", " \n "]
    stream = StrippedStream()
    out = [stream.push(d) for d in deltas]
    assert "".join(out) == "".join(deltas).strip()
    assert out[:4] == ["", "", "two", ""]  # nothing before the first word; "  " held back
