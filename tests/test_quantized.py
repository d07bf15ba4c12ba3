"""Quantized models end to end, the way users run them: `voxtral convert -q` at every width,
then transcribe, live, serve and bench decode real speech with the trained test model past
its prompt (quantized models once crashed on their first decoding step, when the tests only
prefilled them)."""

import json
import shutil

import numpy as np
import pytest
import requests
from test_server import start_server, stream
from test_trained import ASSET, MAX_WER, TARGET_NORMALIZER
from typer.testing import CliRunner
from voxtral_cli.app import app

import voxtral_mlx
from voxtral_mlx.convert import convert
from voxtral_mlx.evaluation import evaluate, find_pairs

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is needed to generate held-out speech"
)
WIDTHS = [(4, 64), (6, 32), (8, 128)]  # bits, group size: every width, every group size


def voxtral(*args: object) -> str:
    """The command in this process (test_cli runs it as a subprocess too): its stdout."""
    done = CliRunner().invoke(app, list(map(str, args)))
    assert done.exit_code == 0, (args, done.output)
    return done.stdout


@pytest.fixture(scope="module")
def speech(held_out):
    """The folder of held-out utterances (conftest)."""
    return held_out[0]


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda w: f"{w[0]}bit-g{w[1]}")
def quantized(request, tmp_path_factory):
    """`voxtral convert -q` of the trained model: (folder, loaded model, bits, group)."""
    bits, group = request.param
    out = tmp_path_factory.mktemp("quantized") / f"q{bits}"
    voxtral("convert", "--hf-path", ASSET, "--mlx-path", out, "-q", "--q-bits", bits,
            "--q-group-size", group)  # fmt: skip
    model = voxtral_mlx.load(out)
    assert model.decoder.layers[0].feed_forward.w1.bits == bits
    return out, model, bits, group


def test_transcribe_live_serve_and_bench(quantized, speech):
    """Every front door decodes the whole utterance and agrees with the library."""
    folder, model, bits, group = quantized
    wav = speech / "utt0001.wav"
    want = voxtral_mlx.transcribe(model, wav)
    assert want.text and want.words  # real words: decoded well past the prompt

    assert voxtral("transcribe", wav, "-m", folder).strip() == want.text
    assert voxtral("live", "--input", wav, "--fast", "-m", folder).strip() == want.text

    bench = json.loads(voxtral("bench", "-m", folder, "--audio", wav, "--json"))
    assert bench["quantization"] == f"{bits}-bit, group {group}"
    assert bench["decoder_ms_per_step"] > 0 and bench["tokens_per_second"] > 0

    proc, port = start_server(folder)  # a real `voxtral serve` process
    try:
        samples = np.round(voxtral_mlx.load_audio(wav) * 32767).astype(np.int16)
        text, done = stream(port, samples)
        assert done["text"] == text and text.strip() == want.text
        with wav.open("rb") as f:
            upload = requests.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                files={"file": ("utt.wav", f)},
                timeout=120,
            )
        assert upload.status_code == 200 and upload.json()["text"] == want.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_eight_bit_keeps_the_held_out_wer(speech, tmp_path):
    model = voxtral_mlx.load(convert(ASSET, tmp_path / "q8", bits=8, group_size=64))
    report = evaluate(model, find_pairs([speech]), 480, TARGET_NORMALIZER)
    print(f"8-bit held-out WER {100 * report.wer:.2f}% over {len(report.files)} utterances")
    assert len(report.files) == 24 and report.wer <= MAX_WER


def test_bench_quantizes_a_float_model_and_decodes(speech):
    """`voxtral bench --q-bits` quantizes after loading, then runs every stage."""
    wav = speech / "utt0002.wav"
    data = json.loads(voxtral("bench", "-m", ASSET, "--audio", wav, "--q-bits", 4, "--json"))
    assert data["quantization"] == "4-bit, group 64" and data["decoder_ms_per_step"] > 0
