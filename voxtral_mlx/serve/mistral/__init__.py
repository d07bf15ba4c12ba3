"""Mistral's realtime transcription dialect on /v1/audio/transcriptions/realtime, as the
official `mistralai` SDKs speak it (`client.audio.realtime`) and the frameworks built on them
(Pipecat, LiveKit, Vision Agents). realtime.py picks it by the URL.

  server -> session.created {session: {request_id, model, audio_format, ...}}   on connect
  client -> session.update {session: {audio_format, target_streaming_delay_ms, language,
            context_bias, turn_detection, diarize, speaker_references}}
  server -> session.updated {session}                 (or an error: nothing changes)
  client -> input_audio.append {audio}                 base64, PCM16 at 16 kHz by default
  server -> transcription.language {audio_language}    the client's language, if it set one
  server -> transcription.text.delta {text}            as the words are decided
  server -> transcription.segment {text, start, end}   each subtitle cue, once complete
  server -> turn.start / turn.end {time_s}             with turn_detection set
  client -> input_audio.flush                          the end of an utterance:
  server -> transcription.done {model, text, language, segments, usage}
  client -> input_audio.end                            flush, then the connection closes
  server -> error {error: {message, code}}             the connection stays usable

Each utterance (the audio from one flush to the next) is a live Session, transcribed as a
file is: its last words come out at its flush, and its text is `voxtral transcribe`'s of the
same audio. The pieces: `MistralDialect` (dialect.py), its settings (settings.py) and the
shapes the SDK validates, which the uploads share (events.py).
"""

from .dialect import MistralDialect

__all__ = ["MistralDialect"]
