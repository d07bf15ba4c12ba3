"""Synthetic spoken-command data for the tiny test model (deterministic for a seed).

Each word is synthesized on its own with espeak-ng (Debian package `espeak-ng`), trimmed to
its voiced part, then words are concatenated with random pauses, so every word boundary is
known exactly. Voices, speeds and pitches vary; background noise is mixed at several levels.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxtral_mlx.audio import resample

WORDS = (
    "zero one two three four five six seven eight nine "
    "yes no up down left right on off stop go start back"
).split()
VOICES = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb+m3",
    "en-us+m7",
    "en-gb-scotland+f2",
    "en-029",
    "en-us+klatt",
)
SPEEDS = (130, 150, 170, 190)
PITCHES = (30, 45, 60, 75)
NOISE_SNR_DB = (None, 30.0, 20.0, 12.0)  # None: clean
RATE = 16000


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # 16 kHz float32
    words: tuple[str, ...]
    spans: tuple[tuple[float, float], ...]  # (start, end) seconds of each word

    @property
    def text(self) -> str:
        return " ".join(self.words)


@cache
def synthesize(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """One word, trimmed to where its energy is (at 16 kHz)."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, word],
            check=True,
            capture_output=True,
        )
        x, rate = sf.read(tmp.name, dtype="float32")
    x = resample(x, rate, RATE)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[loud[0] : loud[-1] + 1]


def make_utterance(rng: np.random.Generator, min_words: int = 2, max_words: int = 6) -> Utterance:
    voice = VOICES[rng.integers(len(VOICES))]
    speed = int(rng.choice(SPEEDS))
    pitch = int(rng.choice(PITCHES))
    words = tuple(
        WORDS[i] for i in rng.integers(len(WORDS), size=rng.integers(min_words, max_words + 1))
    )
    pieces, spans, t = [np.zeros(int(rng.uniform(0.1, 0.8) * RATE), np.float32)], [], 0.0
    t = len(pieces[0]) / RATE
    for word in words:
        x = synthesize(word, voice, speed, pitch) * rng.uniform(0.3, 1.0)
        spans.append((t, t + len(x) / RATE))
        pieces.append(x.astype(np.float32))
        t += len(x) / RATE
        gap = np.zeros(int(rng.uniform(0.08, 0.6) * RATE), np.float32)
        pieces.append(gap)
        t += len(gap) / RATE
    pieces.append(np.zeros(int(rng.uniform(0.1, 0.5) * RATE), np.float32))
    audio = np.concatenate(pieces)
    snr = NOISE_SNR_DB[rng.integers(len(NOISE_SNR_DB))]
    if snr is not None:
        speech_power = np.mean(np.concatenate([p for p in pieces if p.any()]) ** 2)
        noise = rng.standard_normal(len(audio)).astype(np.float32)
        audio = audio + noise * np.sqrt(speech_power / 10 ** (snr / 10))
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return Utterance(audio, words, tuple(spans))


def augment(u: Utterance, rng: np.random.Generator) -> Utterance:
    """What a real input path does to the audio: a later start, another level, a sound card's
    rate and a cheaper resampler, a tilted spectrum, a noise floor instead of digital silence,
    16-bit samples. Word spans move with the added lead."""
    x = u.audio.astype(np.float64)
    lead = int(rng.uniform(0.0, 1.5) * RATE) if rng.random() < 0.5 else 0
    x = np.concatenate([np.zeros(lead), x, np.zeros(int(rng.uniform(0.0, 0.5) * RATE))])
    if rng.random() < 0.5:  # through a 44.1 / 48 kHz device and back
        device = int(rng.choice((44100, 48000)))
        quality = str(rng.choice(("QQ", "LQ", "MQ", "HQ")))
        x = soxr.resample(soxr.resample(x, RATE, device, quality=quality), device, RATE)
        x = np.pad(x, (0, max(0, lead + len(u.audio) - len(x))))
    if rng.random() < 0.3:  # first-order tilt: a small microphone or a muffled one
        a = rng.uniform(0.3, 0.9)
        taps = [1.0, -a] if rng.random() < 0.5 else [1.0, a, a * a]
        x = np.convolve(x, taps)[: len(x)]
    x = x / max(np.abs(x).max(), 1e-6) * rng.uniform(0.05, 1.0)
    if rng.random() < 0.5:
        x = x + rng.standard_normal(len(x)) * 10 ** (rng.uniform(-80, -55) / 20)
    x = np.round(np.clip(x, -1.0, 1.0) * 32767) / 32767
    shift = lead / RATE
    spans = tuple((s + shift, e + shift) for s, e in u.spans)
    return Utterance(x.astype(np.float32), u.words, spans)


def write_set(folder: Path, count: int, seed: int) -> list[Utterance]:
    """NAME.wav + NAME.txt (+ NAME.align.json, the word spans) for `count` utterances."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    utterances = [make_utterance(rng) for _ in range(count)]
    for i, u in enumerate(utterances):
        sf.write(folder / f"utt{i:04d}.wav", u.audio, RATE, subtype="PCM_16")
        (folder / f"utt{i:04d}.txt").write_text(u.text + "\n")
        spans = [
            {"t": w, "b": round(s, 4), "d": round(e - s, 4)}
            for w, (s, e) in zip(u.words, u.spans, strict=True)
        ]
        (folder / f"utt{i:04d}.align.json").write_text(json.dumps({"t": u.text, "w": spans}))
    return utterances


def conversation(
    turns: list[tuple[int, np.ndarray]], gap: float = 0.3, floor: float = 1e-4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float, float]]]:
    """Two tracks of one conversation, for `voxtral meeting`: the microphone's (side 0) and
    the call's (side 1). Each turn's speech is on its side with silence on the other, `gap`
    seconds between turns, a noise floor of `floor` (RMS) under both (no microphone is
    digital silence). Returns the tracks and each turn's (side, start, end) in seconds."""
    sides: list[list[np.ndarray]] = [[], []]
    pause = np.zeros(int(gap * RATE), np.float32)
    spans, t = [], 0.0
    for side, speech in turns:
        sides[side] += [speech, pause]
        sides[1 - side] += [np.zeros_like(speech), pause]
        spans.append((side, t, t + len(speech) / RATE))
        t += (len(speech) + len(pause)) / RATE
    mic, call = np.concatenate(sides[0]), np.concatenate(sides[1])
    noise = floor * np.random.default_rng(seed).standard_normal((2, len(mic)))
    return mic + noise[0].astype(np.float32), call + noise[1].astype(np.float32), spans
