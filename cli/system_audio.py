"""The computer's own output as a source, for `voxtral meeting` (what the call plays).

- A loopback input device named with --system-device (BlackHole on macOS, any input PortAudio
  lists), opened like a microphone.
- Linux: the default output's monitor, through PulseAudio or PipeWire's pulse server.
  PortAudio has no PulseAudio host API in the builds sounddevice uses, but its ALSA `pulse`
  device is the ALSA plugin of libpulse, which records from the source that PULSE_SOURCE
  names when the stream opens; `@DEFAULT_MONITOR@` is the servers' own name for the default
  output's monitor. So the monitor needs no other library, no `pactl`, and follows the
  default output.
- macOS 13 or later: ScreenCaptureKit's audio capture through PyObjC, after the Screen
  Recording permission is checked. Written from Apple's and PyObjC's documentation; it has
  not been run (the tests run on Linux).

`system_audio()` checks a source now (before the model loads) and returns what opens it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np

from voxtral_mlx import VoxtralError

from .capture import InputDevice, MicrophoneSource, Source, find_device, input_devices, sounddevice

PULSE_MONITOR = "@DEFAULT_MONITOR@"  # PulseAudio's and PipeWire's name for it
NO_SOURCE = "no system audio source: "
LOOPBACK_HINT = "or name a loopback input with --system-device"
NO_PULSE_DEVICE = (
    NO_SOURCE + "PortAudio lists no 'pulse' device, through which the default output's monitor "
    "is recorded (PulseAudio or PipeWire's pulse server must be running, with the ALSA pulse "
    "plugin: Debian/Ubuntu: sudo apt install libasound2-plugins); " + LOOPBACK_HINT
)
SCREEN_RECORDING_HINT = (
    "system audio needs the Screen Recording permission: allow your terminal in System "
    "Settings > Privacy & Security > Screen & System Audio Recording (Screen Recording before "
    "macOS 15), then restart it"
)
SCK_RATE = 48000  # ScreenCaptureKit's rate at most, and its default


def system_audio(device: str | None) -> Callable[[], Source]:
    """Checks the system audio source now; returns what opens it. `device`: a loopback input
    (--system-device), else the platform's own."""
    if device is not None:
        found = find_device(device, "--system-device")
        return lambda: MicrophoneSource(found)
    if sys.platform == "darwin":
        check_screen_capture()
        return ScreenCaptureSource
    if sys.platform.startswith("linux"):
        found = pulse_monitor()
        return lambda: MonitorSource(found)
    raise VoxtralError(f"{NO_SOURCE}none is built in on {sys.platform}; {LOOPBACK_HINT}")


# --- Linux: the default output's monitor -------------------------------------------------


@contextmanager
def pulse_source(name: str) -> Iterator[None]:
    """PULSE_SOURCE is `name` while the block opens a stream (libpulse reads it then)."""
    before = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["PULSE_SOURCE"]
        else:
            os.environ["PULSE_SOURCE"] = before


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """ALSA and PortAudio print a failed open's details on the process's stderr: not here."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def pulse_monitor() -> InputDevice:
    """PortAudio's `pulse` device, once the default output's monitor has opened through it."""
    pulse = next((d for d in input_devices() if d.name == "pulse"), None)
    if pulse is None:
        raise VoxtralError(NO_PULSE_DEVICE)
    sd = sounddevice()
    try:
        with quiet_stderr(), pulse_source(PULSE_MONITOR):
            sd.InputStream(device=pulse.index, channels=1, samplerate=pulse.rate).close()
    except sd.PortAudioError as e:
        raise VoxtralError(
            f"{NO_SOURCE}the default output's monitor ({PULSE_MONITOR}) did not open through "
            f"PulseAudio (is there an output?): {e}; {LOOPBACK_HINT}"
        ) from e
    return pulse


class MonitorSource(MicrophoneSource):
    """The default output's monitor: the `pulse` device opened with PULSE_SOURCE naming it."""

    def __init__(self, pulse: InputDevice):
        with pulse_source(PULSE_MONITOR):
            super().__init__(pulse)
        self.name = "the default output's monitor"


# --- macOS: ScreenCaptureKit -------------------------------------------------------------


def check_screen_capture() -> None:
    """ScreenCaptureKit can capture audio here: macOS 13 or later, PyObjC's binding, and the
    Screen Recording permission (asked for once, then one line saying where to grant it)."""
    import platform

    release = platform.mac_ver()[0]
    if int(release.split(".")[0] or 0) < 13:
        raise VoxtralError(
            f"{NO_SOURCE}ScreenCaptureKit captures audio from macOS 13 on, this is "
            f"{release}; {LOOPBACK_HINT} (BlackHole, for instance)"
        )
    try:
        import Quartz
        import ScreenCaptureKit  # noqa: F401
    except ImportError as e:
        raise VoxtralError(
            f"{NO_SOURCE}ScreenCaptureKit's Python binding is missing: "
            "pip install pyobjc-framework-ScreenCaptureKit"
        ) from e
    if not Quartz.CGPreflightScreenCaptureAccess():
        Quartz.CGRequestScreenCaptureAccess()  # the system's prompt, and the terminal listed
        raise VoxtralError(SCREEN_RECORDING_HINT)


def _completion(method, *args, timeout: float = 10.0) -> tuple:
    """Calls an Objective-C method whose last argument is a completion handler, waits for
    the handler and returns what it was given."""
    done, given = threading.Event(), []

    def handler(*values) -> None:
        given.extend(values)
        done.set()

    method(*args, handler)
    if not done.wait(timeout):
        raise VoxtralError("ScreenCaptureKit did not answer")
    return tuple(given)


@cache
def _audio_output_class():
    """The SCStreamOutput that receives the audio (an Objective-C class: defined once)."""
    import CoreMedia
    import objc
    from Foundation import NSObject

    class AudioOutput(NSObject, protocols=[objc.protocolNamed("SCStreamOutput")]):
        def stream_didOutputSampleBuffer_ofType_(self, stream, buffer, kind) -> None:
            if kind != 1:  # SCStreamOutputTypeAudio
                return
            block = CoreMedia.CMSampleBufferGetDataBuffer(buffer)
            frames = CoreMedia.CMSampleBufferGetNumSamples(buffer)
            if block is None or frames <= 0:
                return
            size = CoreMedia.CMBlockBufferGetDataLength(block)
            status, data = CoreMedia.CMBlockBufferCopyDataBytes(block, 0, size, None)
            if status != 0:
                return
            samples = np.frombuffer(bytes(data), np.float32)
            # float32, one plane per channel (non-interleaved): their mean, as a microphone's
            channels = max(len(samples) // frames, 1)
            self.deliver(samples[: channels * frames].reshape(channels, frames).mean(axis=0))

    return AudioOutput


class ScreenCaptureSource(Source):
    """The computer's output through ScreenCaptureKit: a capture of the main display that
    asks for audio (mono float32 at 48 kHz, this process's own sound left out) and for as
    little video as it may (2 x 2 pixels, a frame a second, no output taking it)."""

    def __init__(self):
        super().__init__()
        self._stream = None
        import CoreMedia
        import ScreenCaptureKit as sck

        self.name, self.rate = "system audio (ScreenCaptureKit)", SCK_RATE
        content, error = _completion(
            sck.SCShareableContent.getShareableContentWithCompletionHandler_
        )
        if content is None or not content.displays():
            raise VoxtralError(f"{NO_SOURCE}ScreenCaptureKit shares no display: {error}")
        screen = sck.SCContentFilter.alloc().initWithDisplay_excludingWindows_(
            content.displays()[0], []
        )
        config = sck.SCStreamConfiguration.alloc().init()
        config.setCapturesAudio_(True)
        config.setSampleRate_(SCK_RATE)
        config.setChannelCount_(1)
        config.setExcludesCurrentProcessAudio_(True)
        config.setWidth_(2)
        config.setHeight_(2)
        config.setMinimumFrameInterval_(CoreMedia.CMTimeMake(1, 1))
        self._output = _audio_output_class().alloc().init()
        self._output.deliver = self._queue.put
        self._stream = sck.SCStream.alloc().initWithFilter_configuration_delegate_(
            screen, config, None
        )
        added, error = self._stream.addStreamOutput_type_sampleHandlerQueue_error_(
            self._output, sck.SCStreamOutputTypeAudio, None, None
        )
        if not added:
            raise VoxtralError(f"{NO_SOURCE}ScreenCaptureKit refused the audio output: {error}")
        (error,) = _completion(self._stream.startCaptureWithCompletionHandler_)
        if error is not None:
            raise VoxtralError(f"{NO_SOURCE}ScreenCaptureKit did not start: {error}")

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.stopCaptureWithCompletionHandler_(lambda error: None)
