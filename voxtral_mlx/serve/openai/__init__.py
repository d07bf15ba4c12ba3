"""OpenAI's Realtime transcription dialect on /v1/realtime (the official SDKs, LiveKit, Pipecat
and the apps built on them). realtime.py picks it per connection.

A connection is one stream: its audio goes to one live Session for as long as the connection
lasts, so the decoder's state carries across turns (no reset, no words lost between them).
Each turn is an item; its text streams as it is decided, before the turn ends:

  client -> session.update {session: {type: "transcription", audio: {input: {format,
            transcription, turn_detection, noise_reduction}}, include}}  (or the beta
            transcription_session.update)      answered by session.updated
  client -> input_audio_buffer.append {audio}   PCM16 at 24 kHz by default (or G.711)
  server -> conversation.item.input_audio_transcription.delta {item_id, content_index, delta}
  server -> input_audio_buffer.speech_started / speech_stopped   (turn_detection server_vad)
  client -> input_audio_buffer.commit           (turn_detection null: the client ends turns)
  server -> input_audio_buffer.committed {item_id, previous_item_id}
  server -> conversation.item.input_audio_transcription.completed {item_id, transcript, usage}
  client -> input_audio_buffer.clear            server -> input_audio_buffer.cleared

A turn is complete once the decoder has spoken for all of its audio, `delay` after its end:
if the client sends no more audio after a commit (push to talk), silence is appended for it,
as a file's end is padded. Server VAD (voxtral_mlx/turns.py) comes from the model's own
output, held open by the signal's energy. How each setting is honoured: the README.

The pieces: `OpenAIDialect` (dialect.py: events in and out, and the scheduler's side), the
session's settings (settings.py), the stream's clocks (clock.py), its turns, server VAD and
the pad after a commit (items.py).
"""

from .dialect import OpenAIDialect

__all__ = ["OpenAIDialect"]
