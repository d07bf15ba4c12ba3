"""The browser page's resampler (voxtral_mlx/web/worklet.js), run under Node: what the page
sends must be the microphone's audio at 16 kHz, without aliasing, whatever the block size."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

WORKLET = Path(__file__).resolve().parents[1] / "voxtral_mlx" / "web" / "worklet.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js to run the page's worklet")


def resample(samples: np.ndarray, rate: int, block: int) -> np.ndarray:
    """Feed `samples` at `rate` through PcmResampler in blocks of `block` samples."""
    script = f"""
        const {{ PcmResampler }} = require({json.dumps(str(WORKLET))});
        const input = Float32Array.from(JSON.parse(require("fs").readFileSync(0, "utf8")));
        const r = new PcmResampler({rate});
        const out = [];
        for (let i = 0; i < input.length; i += {block})
            out.push(...r.push(input.subarray(i, i + {block})));
        process.stdout.write(JSON.stringify(out));
    """
    done = subprocess.run(
        [NODE, "-e", script],
        input=json.dumps(samples.tolist()),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return np.array(json.loads(done.stdout))


def tone(freq: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_speech_band_passes_at_16_khz(rate):
    out = resample(tone(1000, rate), rate, 128)
    assert abs(len(out) - 8000) <= 30  # 0.5 s at 16 kHz, less the filter's look-ahead
    want = tone(1000, 16000)[: len(out)]
    # output sample n is the input at time n / 16 kHz: after the filter's warm-up, the same
    # tone in phase and amplitude
    np.testing.assert_allclose(out[100:], want[100:], atol=0.01)
    if rate != 16000:  # the top of the speech band keeps its level too (within 1 dB)
        high = resample(tone(6000, rate), rate, 128)
        assert 0.89 < np.sqrt(2 * np.mean(high[100:] ** 2)) / 0.5 < 1.01


@pytest.mark.parametrize("rate", [48000, 44100])
def test_no_aliasing_above_8_khz(rate):
    """12 kHz would fold onto 4 kHz (and 9 kHz onto 7 kHz) without a low-pass."""
    for freq in (8800, 9000, 12000, 20000):
        out = resample(tone(freq, rate), rate, 128)
        rms = np.sqrt(np.mean(out[100:] ** 2))
        assert rms < 0.5 / np.sqrt(2) / 100, (freq, rms)  # at least 40 dB down


def test_block_size_does_not_change_the_output():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.5, 0.5, 48000 // 4)
    whole = resample(noise, 48000, len(noise))
    for block in (128, 127, 1000):
        np.testing.assert_allclose(resample(noise, 48000, block), whole, atol=1e-9)
