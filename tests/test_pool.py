"""Many streams through one batched decoder (SessionPool): every stream's tokens equal its
solo run, whatever joins, leaves, chunks or delays around it."""

from pathlib import Path

import numpy as np
import pytest

import voxtral_mlx
from voxtral_mlx import Session, SessionPool, TextDelta, VoxtralError
from voxtral_mlx.convert import quantize
from voxtral_mlx.session import Ahead
from voxtral_mlx.testing import shared_audio

CLIPS = ["jfk.wav", *(f"librivox-{n}.wav" for n in ("0870", "0880", "0890", "0920", "0930"))]
DELAYS = [480, 80, 2400, 960, 240, 1200, 480, 80]  # mixed, the extremes included


@pytest.fixture(scope="module")
def clips():
    return [voxtral_mlx.load_audio(shared_audio(name)) for name in CLIPS]


def solo(model, audio, delay_ms, sample_rate=16000) -> list[int]:
    session = Session(model, delay_ms, sample_rate=sample_rate)
    session.feed(audio)
    session.finish()
    return session.result.tokens


@pytest.fixture(scope="module")
def solo_run(model, clips):
    """solo() of (clip index, delay), each computed once for the module."""
    done = {}

    def run(i: int, delay: int) -> list[int]:
        if (i, delay) not in done:
            done[i, delay] = solo(model, clips[i], delay)
        return done[i, delay]

    return run


@pytest.mark.parametrize("n_streams", [1, 2, 5, 8])
def test_every_stream_equals_its_solo_run(model, clips, solo_run, n_streams):
    """Streams start at different passes, arrive in random chunks, end at different times
    and leave the pool as soon as they are done, at delays of 80 to 2400 ms; the clips (3
    to 11 s) cross the test model's windows (12 encoder frames, 24 decoder positions)."""
    rng = np.random.default_rng(n_streams)
    streams = [(clips[i % len(clips)], DELAYS[i]) for i in range(n_streams)]
    which = [(i % len(clips), DELAYS[i]) for i in range(n_streams)]
    pool = SessionPool(model)
    sessions: list[Session | None] = [None] * n_streams
    fed = [0] * n_streams
    texts = [[] for _ in range(n_streams)]
    results = {}
    tick = 0
    while len(results) < n_streams:
        for i, (audio, delay) in enumerate(streams):
            if sessions[i] is None and i not in results and tick >= 2 * i:  # staggered
                sessions[i] = pool.add(delay)
            session = sessions[i]
            if session is None or session.ended:
                continue
            n = int(rng.integers(1, 6000))
            session.push(audio[fed[i] : fed[i] + n])
            fed[i] += n
            if fed[i] >= len(audio):
                session.end()
        for _ in range(int(rng.integers(1, 4))):
            for session, events in pool.step().items():
                i = sessions.index(session)
                texts[i] += [e.text for e in events if isinstance(e, TextDelta)]
                if session.result is not None:
                    results[i] = session.result
                    pool.remove(session)
                    sessions[i] = None
        tick += 1
    assert not pool.sessions and not pool.batch.rows
    for i in range(n_streams):
        assert results[i].tokens == solo_run(*which[i]), (i, which[i])
        assert "".join(texts[i]).strip() == results[i].text


def test_a_pooled_session_also_works_alone(model, clips):
    """feed/finish on a session of a pool decode it alone; the other rows wait."""
    pool = SessionPool(model)
    a, b = pool.add(480), pool.add(960, sample_rate=48000)
    from voxtral_mlx.audio import resample

    b.push(resample(clips[1], 16000, 48000)[:48000])
    a.feed(clips[0])
    a.finish()
    assert a.result.tokens == solo(model, clips[0], 480)
    assert b.result is None and b.pending_positions > 0
    b.push(resample(clips[1], 16000, 48000)[48000:])
    b.end()
    while b.result is None:
        pool.step()
    assert b.result.tokens == solo(model, resample(clips[1], 16000, 48000), 960, 48000)


def test_pool_errors(model, official_dir):
    pool = SessionPool(model)
    other = voxtral_mlx.load(official_dir)
    with pytest.raises(VoxtralError, match="share one model"):
        Session(other, pool=pool)
    session = pool.add()
    session.end()
    with pytest.raises(VoxtralError, match="finishing"):
        session.push(np.zeros(100, np.float32))
    pool.remove(session)
    pool.remove(session)  # twice is harmless
    assert pool.step() == {}


def test_quantizing_after_a_session_is_not_stale(official_dir, clips):
    """The compiled decoder pass declares the model's parameters as inputs: a model
    quantized (or with a weight replaced) after a session has run gives the tokens of one
    changed before any session."""

    def inflate_eos(m):  # the tied head then emits EOS often
        m.decoder.tok_embeddings.weight = m.decoder.tok_embeddings.weight.at[2].multiply(25.0)

    audio = clips[2]
    for change in (lambda m: quantize(m, 4, 32), inflate_eos):
        before = voxtral_mlx.load(official_dir)
        change(before)
        want = solo(before, audio, 480)
        after = voxtral_mlx.load(official_dir)
        float_tokens = solo(after, audio, 480)  # traces the float model's pass
        change(after)
        assert solo(after, audio, 480) == want
        assert want != float_tokens  # the change shows in the tokens: a stale pass would not


def test_memory_per_stream_and_the_default_session_limit(model, clips):
    """stream_bytes bounds what a stream's caches hold (measured on a long stream), and is
    about 1.2 GB for the real model in bf16; the server's default limit follows from it."""
    import mlx.core as mx

    from voxtral_mlx.bench import architecture
    from voxtral_mlx.config import BENCH_SIZES
    from voxtral_mlx.model import VoxtralRealtime
    from voxtral_mlx.session import stream_bytes, streams_that_fit

    audio = np.concatenate(clips)  # 26 s: the test model's windows are long full
    session = Session(model, 480)
    session.feed(audio)  # file-sized encoder calls
    assert session.pool.batch.capacity == session.pool.batch.full  # the ring at its largest
    assert session.state_bytes <= stream_bytes(model)
    live = Session(model, 480)
    for lo in range(0, len(audio), 16000):  # 1 s (12.5 tokens) a call, as the server does
        live.feed(audio[lo : lo + 16000])
    assert live.state_bytes <= stream_bytes(model)
    real = VoxtralRealtime(architecture(BENCH_SIZES["full"]["enc"], BENCH_SIZES["full"]["dec"]))
    real.set_dtype(mx.bfloat16)  # lazily built: no memory is allocated
    decoder, encoder = 26 * 2 * 8 * 128 * 2, 32 * 2 * 32 * 64 * 2  # bytes a position, a frame
    assert stream_bytes(real) == decoder * (8192 + 63) + encoder * (749 + 4 * 94)
    assert round(stream_bytes(real) / 1e9, 2) == 1.17  # GB
    assert 1 <= streams_that_fit(model) <= 64


def test_transcribe_many_equals_transcribe_of_each_file(model, clips, tmp_path):
    """Files decoded together, a few at a time, each give what transcribe() gives alone; a
    file that cannot be read is reported in its place and the others go on."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    sources = [shared_audio(name) for name in CLIPS]
    sources.insert(2, bad)
    sources.append(clips[1][: 16000 * 2])  # an array too
    results = dict(voxtral_mlx.transcribe_many(model, sources, delay_ms=960, batch=3))
    assert sorted(results) == list(range(len(sources)))
    assert isinstance(results[2], VoxtralError) and "bad.wav" in str(results[2])
    for i, source in enumerate(sources):
        if i != 2:
            assert results[i].tokens == voxtral_mlx.transcribe(model, source, 960).tokens, i
    with pytest.raises(VoxtralError, match="batch"):
        list(voxtral_mlx.transcribe_many(model, sources, batch=0))


@pytest.mark.parametrize("which", ["test model", "trained"])
def test_encoder_rows_equal_the_offline_encoder(model, which):
    """EncoderBatch: rows fed different numbers of tokens a call (or none), joining and
    leaving, give the frames of one offline call over each whole signal; with the test
    model's 12-frame window the ring is full at once, with the trained model's 750 a row's
    ring grows (256 slots = frames, then the full ring) before it wraps, rows of both sizes
    in one call."""
    import mlx.core as mx

    from voxtral_mlx.encoder import EncoderBatch
    from voxtral_mlx.mel import log_mel_spectrogram
    from voxtral_mlx.offline import pad_audio

    if which == "trained":
        model = voxtral_mlx.load(Path(__file__).parent / "assets" / "tiny-voxtral")
    rng = np.random.default_rng(11)
    mels, wants = [], []
    lengths = (3, 5, 2, 4) if which == "test model" else (18, 8, 4, 12)  # seconds
    for seconds in lengths:
        audio = (0.1 * rng.standard_normal(16000 * seconds)).astype(np.float32)
        mel = log_mel_spectrogram(pad_audio(audio, model.args.schedule(480)), model.args.audio)
        mel = mel[: mel.shape[0] // 8 * 8]
        mels.append(mel)
        wants.append(np.array(model.encoder(mx.array(mel)[None])[0]))  # banded mask, one call
    batch = EncoderBatch(model.encoder, max_tokens=16)
    rows = {0: batch.add(), 1: batch.add()}  # 2 and 3 join later, 0 leaves when done
    got = {i: [] for i in range(len(mels))}
    done = [0] * len(mels)
    sizes = 0  # the most ring sizes of one call
    while any(done[i] < len(m) for i, m in enumerate(mels)):
        if done[0] > 0 and 2 not in rows:
            rows[2] = batch.add()
        if done[1] > 200 and 3 not in rows:
            rows[3] = batch.add()
        inputs = {}
        for i, row in rows.items():
            if done[i] < len(mels[i]) and rng.random() < 0.7:
                mel = mels[i][done[i] : done[i] + 8 * int(rng.integers(1, 17))]
                inputs[row] = mx.array(mel)
                done[i] += mel.shape[0]
        for row, frames in (batch.run(inputs) if inputs else {}).items():
            got[next(i for i, r in rows.items() if r is row)].append(np.array(frames))
        sizes = max(sizes, len(batch.rings))
        if done[0] == len(mels[0]) and 0 in rows:
            batch.remove(rows.pop(0))
    assert len(batch.rows) == 3 and batch.capacity == batch.full
    assert max(want.shape[0] for want in wants) > batch.full  # the ring wrapped
    assert sizes == (1 if which == "test model" else 2)  # rows of two ring sizes in one call
    for i, want in enumerate(wants):
        np.testing.assert_allclose(np.concatenate(got[i]), want, rtol=1e-4, atol=1e-4)


AGES = (600, 300, 40)  # positions: rings of 1024, 512 and 256 slots (window 8192)


def test_rows_of_every_age_in_one_pass(trained):
    """Rows 600, 300 and 40 positions old in the same passes, each over a ring of its own
    size (the trained model's window is the real 8192), give at every position the tokens
    of their runs alone, where each row's ring is the only one."""
    import mlx.core as mx

    from voxtral_mlx.decoder import DecoderBatch

    rng = np.random.default_rng(5)
    dim, vocab = trained.args.decoder.dim, trained.args.decoder.vocab_size
    n = [age + 8 for age in AGES]  # then 8 positions a pass together
    audio = [mx.array(rng.standard_normal((m, dim)).astype(np.float32)) for m in n]
    ids = [rng.integers(0, vocab, m).tolist() for m in n]

    def chunks(i: int, age_first: bool):
        """Row i's (start, stop) a pass: 64 until its age (if age_first), then 8."""
        p = 0
        while p < n[i]:
            size = min(64, AGES[i] - p) if age_first and p < AGES[i] else min(8, n[i] - p)
            yield p, p + size
            p += size

    def run(batch, rows, schedule):
        out = {i: [] for i in rows}
        for passes in schedule:
            inputs = {rows[i]: (audio[i][a:b], ids[i][a:b]) for i, (a, b) in passes.items()}
            tokens = np.array(batch.run(inputs))
            for i, (a, b) in passes.items():
                out[i] += tokens[batch.rows.index(rows[i]), : b - a].tolist()
        return out

    alone = {}
    for i in range(len(AGES)):
        batch = DecoderBatch(trained.decoder)
        alone |= run(batch, {i: batch.add(6)}, [{i: c} for c in chunks(i, True)])
    # together: each row aged in 64-position passes beside the others (the youngest first:
    # a row without positions in a pass still takes its L slots), then 8 a pass, all rows
    batch = DecoderBatch(trained.decoder)
    rows = {i: batch.add(6) for i in range(len(AGES))}
    aging = [{i: c} for i in (2, 1, 0) for c in chunks(i, True) if c[1] <= AGES[i]]
    together = [
        dict(zip(rows, cs, strict=True))
        for cs in zip(*([c for c in chunks(i, True) if c[0] >= AGES[i]] for i in rows), strict=True)
    ]
    got = run(batch, rows, aging + together)
    assert [ring.slots for ring in batch.rings] == [256, 512, 1024]
    for i in rows:
        assert got[i] == alone[i], i


def test_sessions_of_two_ring_sizes_in_one_pool(trained, held_out):
    """Through SessionPool: a stream 19 s old (its decoder ring 512 slots) and a fresh one
    with a context bias (256) share passes, and each gives the tokens of its solo run."""
    _, utterances = held_out
    speech = [np.concatenate([u.audio for u in utterances[:8]]), utterances[8].audio]
    options = [{}, {"context_bias": ["seven", "stop"]}]
    pool, sessions, results, sizes = SessionPool(trained), {}, {}, set()
    tick = 0
    while len(results) < 2:
        for i, start in enumerate((0, 19)):  # seconds
            if tick == start:
                sessions[i] = pool.add(480, **options[i])
            session = sessions.get(i)
            if session is None or session.ended:
                continue
            lo = (tick - start) * 16000  # 1 s a tick
            session.push(speech[i][lo : lo + 16000])
            if lo + 16000 >= len(speech[i]):
                session.end()
        while pool.step():
            sizes.add(tuple(ring.slots for ring in pool.batch.rings))
            for i, session in list(sessions.items()):
                if session.result is not None:
                    results[i] = session.result.tokens
                    pool.remove(sessions.pop(i))
        tick += 1
    assert (256, 512) in sizes  # one pass held rows of both sizes
    for i, audio in enumerate(speech):
        alone = Session(trained, 480, **options[i])
        alone.feed(audio)
        alone.finish()
        assert results[i] == alone.result.tokens, i


def test_a_pass_started_ahead_changes_no_token(model, official_dir, clips, monkeypatch):
    """A lone session's next pass is built from its last output before that output is read
    (SessionPool._start_ahead). The same calls with and without it give the same tokens: a
    lone file at fp32 and 4 bits (passes started ahead and taken), EOS stopping a file (a
    pass started ahead undone), and a pass in flight when another session joins, when a list
    is set, when the session resets (undone and built again)."""
    eos_model = voxtral_mlx.load(official_dir)
    embeddings = eos_model.decoder.tok_embeddings
    embeddings.weight = embeddings.weight.at[2].multiply(3.0)  # EOS comes in a few tokens
    started, undone, in_flight = [], [], []
    real_start, real_cancel = SessionPool._start_ahead, Ahead.cancel

    def spy(pool, *args):
        ahead = real_start(pool, *args)
        started.append(ahead is not None)
        return ahead

    def cancel(ahead, batch):
        undone.append(ahead)
        real_cancel(ahead, batch)

    monkeypatch.setattr(Ahead, "cancel", cancel)

    def scenario(pool_model, audio, calls) -> list[list[int]]:
        pool = SessionPool(pool_model)
        a = pool.add(480, max_draft=1)  # one position a pass: each can start the next
        a.push(audio)
        a.end()
        for _ in range(6):
            pool.step()
        in_flight.append(pool._ahead is not None)
        extra = calls(pool, a)
        while a.result is None or (extra and extra.result is None):
            pool.step()
        return [a.result.tokens] + ([extra.result.tokens] if extra else [])

    def joins(pool, a):
        b = pool.add(960)
        b.push(clips[1][:32000])
        b.end()
        return b

    def sets_a_list(pool, a):
        a.set_context_bias(["and so"])

    def resets(pool, a):
        a.reset()
        a.push(clips[3])
        a.end()

    q4 = voxtral_mlx.load(official_dir)
    quantize(q4, 4, 32)
    cases = [  # (the calls, whether a pass ahead is undone)
        (lambda: [voxtral_mlx.transcribe(eos_model, clips[2], max_draft=1).tokens], True),
        (lambda: [solo(model, clips[0], 480)], False),
        (lambda: [voxtral_mlx.transcribe(q4, clips[0], max_draft=1).tokens], False),  # 4-bit
        (lambda: scenario(model, clips[2], joins), True),
        (lambda: scenario(model, clips[2], sets_a_list), True),
        (lambda: scenario(model, clips[2], resets), True),
    ]
    for i, (case, undoes) in enumerate(cases):
        started.clear(), undone.clear(), in_flight.clear()
        monkeypatch.setattr(SessionPool, "_start_ahead", spy)
        ahead = case()
        assert any(started) and all(in_flight)  # a scenario's calls come with one in flight
        assert bool(undone) == undoes
        assert i or ahead[0][-1] == eos_model.tokenizer.eos_id
        monkeypatch.setattr(SessionPool, "_start_ahead", lambda *args: None)
        assert case() == ahead


def test_a_pass_ahead_charges_no_idle_time_and_leaves_with_its_session(model, clips):
    """A lone session's time in the model does not count the caller's time between two
    steps while a pass ahead is in flight; removing the session drops that pass (it holds
    the session's encoded audio)."""
    import time

    pool = SessionPool(model)
    a = pool.add(480, max_draft=1)
    a.push(clips[2])
    for _ in range(6):
        pool.step()
    assert pool._ahead is not None
    before = a.elapsed_seconds
    time.sleep(1.0)
    pool.step()
    assert a.elapsed_seconds - before < 0.5  # one tiny pass, not the second slept
    assert pool._ahead is not None
    pool.remove(a)
    assert pool._ahead is None and not pool.batch.rows
