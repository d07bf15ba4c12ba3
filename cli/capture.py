"""Audio sources for `voxtral live`: a microphone through sounddevice, or a file replayed
through the same path. Each yields mono float32 blocks at its own rate; the caller
resamples to 16 kHz. sounddevice (and PortAudio) is imported only here, only when needed."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxtral_mlx import VoxtralError

BLOCK_SECONDS = 0.05  # 50 ms blocks from the source
PORTAUDIO_HINT = (
    "PortAudio, which microphone capture needs, is not installed "
    "(macOS: brew install portaudio; Debian/Ubuntu: sudo apt install libportaudio2)"
)


def sounddevice():
    try:
        import sounddevice as sd
    except OSError as e:  # the wheel is there but the PortAudio library is not
        raise VoxtralError(PORTAUDIO_HINT) from e
    except ImportError as e:
        raise VoxtralError("sounddevice is not installed: pip install sounddevice") from e
    return sd


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    rate: int
    is_default: bool


def input_devices() -> list[InputDevice]:
    sd = sounddevice()
    try:
        default = sd.default.device[0]
        devices = sd.query_devices()
    except sd.PortAudioError as e:
        raise VoxtralError(f"cannot list audio devices: {e}") from e
    return [
        InputDevice(
            i, d["name"], d["max_input_channels"], int(d["default_samplerate"]), i == default
        )
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def describe(devices: list[InputDevice]) -> str:
    return "; ".join(f"{d.index}: {d.name}" for d in devices) or "none"


def find_device(spec: str | None, option: str = "--device") -> InputDevice:
    """An input device by index or by a case-insensitive part of its name (None: default);
    `option` names where `spec` came from in the error."""
    devices = input_devices()
    if spec is None:
        if not devices:
            raise VoxtralError("no audio input device found")
        return next((d for d in devices if d.is_default), devices[0])
    if spec.strip().isdigit():
        match = [d for d in devices if d.index == int(spec)]
    else:
        match = [d for d in devices if spec.lower() in d.name.lower()]
        exact = [d for d in match if d.name.lower() == spec.lower()]
        match = exact or match
    if len(match) == 1:
        return match[0]
    what = "matches several input devices" if match else "matches no input device"
    raise VoxtralError(f"{option} {spec!r} {what}; input devices: {describe(match or devices)}")


class Source:
    """Blocks of mono float32 samples at `rate`, from a producer thread or callback."""

    name: str
    rate: int

    def __init__(self, maxsize: int = 0):
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize)
        self.overflows = 0  # times the device had audio we did not read in time (lost)

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """Blocks until the source ends; once `stop` is set, capture stops and what was
        already captured is still handed out (Ctrl+C loses no audio)."""
        while True:
            if stop.is_set():
                self.close()
            try:
                block = self._queue.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if block is None:
                return
            yield block

    def queued(self) -> list[np.ndarray]:
        """The blocks captured and not handed out yet, without waiting (the end of the
        source, once reached, stays for `blocks`)."""
        found = []
        while True:
            try:
                block = self._queue.get_nowait()
            except queue.Empty:
                return found
            if block is None:
                self._queue.put(None)
                return found
            found.append(block)

    def backlog_seconds(self) -> float:
        return self._queue.qsize() * BLOCK_SECONDS

    def close(self) -> None:
        pass


def overflow_warning(source: Source) -> str:
    """What a user is told when the device overflowed: audio was lost, and why."""
    times = "once" if source.overflows == 1 else f"{source.overflows} times"
    return (
        f"{source.name} overflowed {times}: some audio was lost (the machine was too busy to "
        "read it in time) and its words may be missing"
    )


class MicrophoneSource(Source):
    """An input device through PortAudio (a microphone, or a loopback of the output)."""

    def __init__(self, device: InputDevice):
        super().__init__()
        sd = sounddevice()
        self.name, self.rate = device.name, device.rate
        channels = min(device.channels, 2)

        def callback(indata, frames, time_info, status) -> None:
            if status.input_overflow:
                self.overflows += 1
            self._queue.put(indata.mean(axis=1).astype(np.float32))

        try:
            self._stream = sd.InputStream(
                device=device.index,
                channels=channels,
                samplerate=device.rate,
                dtype="float32",
                blocksize=int(device.rate * BLOCK_SECONDS),
                # the device's buffer at its largest: a callback held up (the decoder holds
                # the interpreter) loses no audio; it adds tens of ms to the delay at most
                latency="high",
                callback=callback,
            )
            self._stream.start()
        except sd.PortAudioError as e:
            raise VoxtralError(f"cannot open input device {device.name!r}: {e}") from e

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.stop()
            self._stream.close()


class FileSource(Source):
    """A file (decoded: samples at their own rate) played through the capture path, at
    real-time pace unless `fast`."""

    def __init__(self, path: Path, decoded: tuple[np.ndarray, int], fast: bool = False):
        super().__init__(maxsize=64 if fast else 0)
        samples, self.rate = decoded
        self.name = f"file {path.name}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, args=(samples, fast), daemon=True)
        self._thread.start()

    def _play(self, samples: np.ndarray, fast: bool) -> None:
        block = int(self.rate * BLOCK_SECONDS)
        start = time.perf_counter()
        for i, lo in enumerate(range(0, len(samples), block)):
            if self._stop.is_set():
                return
            if not fast:  # a microphone delivers a block once it has been heard
                time.sleep(max(start + (i + 1) * BLOCK_SECONDS - time.perf_counter(), 0))
            self._queue.put(samples[lo : lo + block])
        self._queue.put(None)

    def close(self) -> None:
        self._stop.set()
