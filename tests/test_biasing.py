"""Context biasing (custom vocabulary, MODEL.md "Context biasing"): the list, the tree and
its failure arcs, the rule of where the bonus applies, and the library's doors, with the
tiny trained model (its words are single Tekken pieces: " zero", " one", ...)."""

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from clirun import voxtral

import voxtral_mlx
from voxtral_mlx import Session, SessionPool, VoxtralError
from voxtral_mlx.biasing import (
    DEFAULT_STRENGTH,
    MAX_PHRASE_CHARS,
    MAX_PHRASES,
    ContextBias,
    biased_greedy,
    bonus_rows,
    parse_context_bias,
    read_context_bias_file,
)
from voxtral_mlx.convert import convert
from voxtral_mlx.offline import encode_audio, pad_audio

ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"
PAD, WORD = 32, 33
LOUD = [("zero one two", 20.0)]  # far above any margin: every text position is the list's


@pytest.fixture(scope="module")
def speech():
    """Four held-out utterances (seeded), then two of them in loud white noise (the model
    misses words)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed to generate speech")
    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from data import make_utterance

    rng = np.random.default_rng(2501)
    clean = [make_utterance(rng, 4, 6).audio for _ in range(4)]
    noisy = [a + rng.standard_normal(len(a)).astype(np.float32) * 1.5 * a.std() for a in clean]
    return clean + noisy[:2]


def piece(trained, word: str) -> int:
    (token,) = trained.tokenizer.tekken.encode(f" {word}", bos=False, eos=False)
    return token


def text_ids(tokens: list[int]) -> list[int]:
    return [t for t in tokens if t >= 1000]


# --- the list ---


def test_parse_forms():
    assert parse_context_bias(None) == [] and parse_context_bias([]) == []
    assert parse_context_bias("Voxtral, MLX ,  Kubernetes") == [
        ("Voxtral", DEFAULT_STRENGTH),
        ("MLX", DEFAULT_STRENGTH),
        ("Kubernetes", DEFAULT_STRENGTH),
    ]
    # Mistral's field: repeated form fields, or one holding a JSON list; pairs take a weight
    assert parse_context_bias(['["a b", ["c", 3]]', "d"], strength=1.5) == [
        ("a b", 1.5),
        ("c", 3.0),
        ("d", 1.5),
    ]
    assert parse_context_bias([("x  y", 1.0), "x y", ("x y", 9.0)]) == [("x y", 9.0)]


@pytest.mark.parametrize(
    "value, message",
    [
        (["ok", "  "], "a phrase is empty"),
        ([""], "a phrase is empty"),
        (["x" * (MAX_PHRASE_CHARS + 1)], f"at most {MAX_PHRASE_CHARS} characters"),
        (["bell\x07"], "printable"),
        ([f"p{i}" for i in range(MAX_PHRASES + 1)], f"at most {MAX_PHRASES} phrases"),
        ([("a", 0)], "above 0"),
        ([("a", float("nan"))], "above 0"),
        ([("a", 100)], "at most 20"),
        ([("a", "2")], "must be a number"),
        ([["a", 1, 2]], "a phrase or a [phrase, weight] pair"),
        ([3], "a phrase or a [phrase, weight] pair"),
        ({"a": 1}, "must be a list of phrases"),
        ("[1, 2", "not a valid JSON list"),
    ],
)
def test_bad_lists_are_one_clear_error(value, message):
    with pytest.raises(VoxtralError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_context_bias(value)


def test_a_thousand_phrases_and_the_file_format(trained, tmp_path):
    phrases = [f"name{i} part{i % 7}" for i in range(MAX_PHRASES)]
    tree = ContextBias(trained.tokenizer, parse_context_bias(phrases))
    ids, values = tree.bonus(0)  # a phrase's first token: its weight
    assert len(ids) == len(set(ids.tolist())) and (values == DEFAULT_STRENGTH).all()
    file = tmp_path / "vocabulary.txt"
    file.write_text("Voxtral\n\nKubernetes\t3.5\n  MLX  \n")
    default = DEFAULT_STRENGTH
    assert read_context_bias_file(file) == [
        ("Voxtral", default),
        ("Kubernetes", 3.5),
        ("MLX", default),
    ]
    file.write_bytes(b"\xef\xbb\xbfVoxtral\r\nMLX\t3\r\n")  # a BOM (Windows editors), CRLF
    assert read_context_bias_file(file) == [("Voxtral", default), ("MLX", 3.0)]
    file.write_text("Voxtral\n\t3\n")
    with pytest.raises(VoxtralError, match="line 2: no phrase before the tab"):
        read_context_bias_file(file)
    file.write_text("Voxtral\tlots\n")
    with pytest.raises(VoxtralError, match="line 1: the weight after the tab must be a number"):
        read_context_bias_file(file)
    file.write_text("Voxtral\t0\n")
    with pytest.raises(VoxtralError, match="line 1: the weight after the tab must be above 0"):
        read_context_bias_file(file)
    file.write_bytes(b"Vox\xe4tral\n")
    with pytest.raises(VoxtralError, match="is not UTF-8 text"):
        read_context_bias_file(file)
    with pytest.raises(VoxtralError) as caught:
        read_context_bias_file(tmp_path / "missing.txt")
    assert str(caught.value).endswith("missing.txt: No such file or directory")


# --- the tree ---


def test_the_forms_a_phrase_takes(trained):
    """After a space (" six", " seven": two pieces), and before any text as written ("six"
    spelled in bytes, then " seven"); once text is written, not as written: "s" there would
    glue the phrase onto the word before it."""
    tree = ContextBias(trained.tokenizer, [("six seven", 2.0)])
    encode = trained.tokenizer.tekken.encode
    for form, at_start in ((" six seven", True), ("six seven", True), (" six seven", False)):
        m = tree.matcher(at_start)
        for token in encode(form, bos=False, eos=False):
            assert token in m.bonus()[0].tolist()
            m.advance(token)
        assert not tree.nodes[m.node].children  # the end of the phrase
    (s,) = encode("s", bos=False, eos=False)
    m = tree.matcher()
    assert s in m.bonus()[0].tolist()
    m.advance(piece(trained, "two"))  # text written: the phrase only after a space now
    assert s not in m.bonus()[0].tolist() and same_bonus(m, tree.matcher(at_start=False))


def test_multi_token_match_failure_arcs_and_a_fresh_start(trained):
    tree = ContextBias(trained.tokenizer, [("one two three", 2.0), ("two four", 3.0)])
    one, two, three, four = (piece(trained, w) for w in "one two three four".split())
    root = tree.matcher(at_start=False)
    m = tree.matcher()
    for token in (one, PAD, WORD, PAD, two):  # control tokens do not move the tree
        m.advance(token)
    ids, values = m.bonus()[:2]
    bonus = dict(zip(ids.tolist(), values.tolist(), strict=True))
    # continue "one two three", or "two four" through the failure arc of "one two": each
    # a continuation, 2.5 x its phrase's weight; "one" and "two" start phrases: the weight
    assert bonus[three] == 5.0 and bonus[four] == 7.5
    assert bonus[one] == 2.0 and bonus[two] == 3.0
    m.advance(four)  # completes "two four" (found through the arc)
    assert m.node == tree.goto(tree.goto(0, two), four)
    m.advance(one)
    m.advance(two)
    m.advance(three)  # completes "one two three": the next position is the root's again
    assert same_bonus(m, root)


def test_a_broken_partial_match_gives_its_bonus_back(trained):
    """After " six" the continuation " seven" has a bonus; a word that breaks the match
    leaves nothing of it: the stream's next bonus is a fresh stream's."""
    tree = ContextBias(trained.tokenizer, [("six seven eight", 2.0)])
    six, seven, two = (piece(trained, w) for w in ("six", "seven", "two"))
    m, fresh = tree.matcher(), tree.matcher(at_start=False)
    m.advance(six)
    assert seven in m.bonus()[0].tolist() and seven not in fresh.bonus()[0].tolist()
    m.advance(seven)
    m.advance(two)  # breaks "six seven" + "eight"
    assert m.node == 0 and same_bonus(m, fresh)


def same_bonus(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.bonus(), b.bonus(), strict=True))


# --- the rule ---


def test_the_rule_where_the_bonus_applies():
    """Rows of logits over a vocabulary of 1000 control + 6 text ids: the bonus changes
    which text a text position writes, and a pad only where the row's pad may yield."""
    V = 1006
    logits = np.full((3, 3, V), -10.0, np.float32)
    logits[:, 0, 1000], logits[:, 0, 1001] = 5.0, 4.0  # text: 1000 ahead of 1001 by 1
    logits[:, 1, PAD], logits[:, 1, 1001] = 5.0, 3.5  # a pad ahead of 1001 by 1.5
    logits[:, 2, WORD], logits[:, 2, 1001] = 5.0, 4.9  # a marker: never yields
    bonus = (np.array([1001], np.int32), np.array([2.0], np.float32))
    ids, values, yields = bonus_rows([(*bonus, -1), (*bonus, PAD), None])
    out = biased_greedy(mx.array(logits), ids, values, yields, mx.array(1000)).tolist()
    assert out[0] == [1001, PAD, WORD]  # text only
    assert out[1] == [1001, 1001, WORD]  # a pad yields (a word is announced)
    assert out[2] == [1000, PAD, WORD]  # no list: the greedy tokens
    assert ids.shape == (3, 16) and yields.tolist() == [[-1], [PAD], [-1]]


# --- the doors, decoding with the trained model ---


def test_no_list_or_an_empty_one_is_token_identical(trained, speech):
    for audio in speech[::3]:
        want = voxtral_mlx.transcribe(trained, audio).tokens
        assert voxtral_mlx.transcribe(trained, audio, context_bias=[]).tokens == want
        assert voxtral_mlx.transcribe(trained, audio, context_bias=None).tokens == want
        assert voxtral_mlx.transcribe(trained, audio, context_bias="  ").tokens == want


def test_a_multi_token_phrase_completes(trained, speech):
    """With "zero one two" loud, " one" comes only right after " zero" and " two" only
    after " one" (they are no phrase's start: the tree carries the match), and the phrase
    completes and starts again."""
    zero, one, two = (piece(trained, w) for w in ("zero", "one", "two"))
    for audio in speech[:2]:
        plain = voxtral_mlx.transcribe(trained, audio)
        text = text_ids(voxtral_mlx.transcribe(trained, audio, context_bias=LOUD).tokens)
        assert "zero one two" not in plain.text
        assert set(text) <= {zero, one, two}
        assert any(text[i : i + 3] == [zero, one, two] for i in range(len(text)))
        for before, token in zip(text, text[1:], strict=False):
            assert token == zero or (before, token) in {(zero, one), (one, two)}


def test_every_token_is_the_rule_applied_to_the_unbiased_logits(trained, speech):
    """A biased run replayed: at each position the teacher-forced logits of its own
    inputs, the matcher's bonus before that position, the rule (biased_greedy) and the
    matcher's guard (settle): the same token, for a moderate list on noisy speech (breaks,
    restarts and yields happen)."""
    phrases = [("three six", 4.0), ("seven eight", 4.0), ("two nine", 4.0), ("up", 3.0)]
    tree = ContextBias(trained.tokenizer, phrases)
    schedule = trained.args.schedule(None)
    L = schedule.prompt_length
    changed = 0
    for audio in speech[2:] + speech[:2]:
        result = voxtral_mlx.transcribe(trained, audio, context_bias=tree)
        changed += result.tokens != voxtral_mlx.transcribe(trained, audio).tokens
        prompt = trained.tokenizer.prompt(L)
        ids = prompt + result.tokens[:-1]
        embeds = encode_audio(trained, pad_audio(audio, schedule))[: len(ids)]
        x = embeds + trained.decoder.tok_embeddings(mx.array(ids))
        logits = trained.decoder(
            x[None], trained.decoder.ffn_norm_weights(schedule.n_delay_tokens)
        )[0, L - 1 :]
        m = tree.matcher()
        for j, token in enumerate(result.tokens):
            rows = bonus_rows([m.bonus()])
            want = biased_greedy(logits[None, j : j + 1], *rows, mx.array(1000)).item()
            assert token == m.settle(want), j
            m.advance(token)
    assert changed  # the list did change tokens


def test_one_announced_word_gets_one_word_however_strong_the_list(trained, held_out):
    """A pad that yields writes an announced word early; the model then writes its own text
    of that word: without the guard (BiasMatcher.settle) strength 12 wrote 40 extra words in
    these 24 clips ("six three three"). Now no [STREAMING_WORD] is followed by two words,
    and no more words are written than were said."""
    tokenizer = trained.tokenizer
    _, utterances = held_out
    extra, written, said = 0, 0, 0
    for u in utterances:
        bias = [("six", 12.0), ("three", 12.0), ("stop", 12.0)]
        tokens = voxtral_mlx.transcribe(trained, u.audio, context_bias=bias).tokens
        since_announced = 0
        for token in tokens:
            if token == tokenizer.streaming_word_id:
                since_announced = 0
            elif not tokenizer.is_special(token) and tokenizer.byte_piece(token)[:1] == b" ":
                since_announced += 1
                extra += since_announced > 1
                written += 1
        said += len(u.words)
    assert extra == 0 and 0.8 * said <= written <= said


def test_drafts_with_a_list_equal_one_position_a_pass(trained, speech):
    """A draft verifies with the bonus of its first position; pads do not move the tree,
    so every accepted position had that bonus on the one-position path too."""
    lists = [LOUD, [("three six", 4.0), ("seven", 4.0)], ["five", "nine eight"]]
    for audio in speech[3:]:
        for bias in lists:
            drafted = voxtral_mlx.transcribe(trained, audio, context_bias=bias)
            single = voxtral_mlx.transcribe(trained, audio, context_bias=bias, max_draft=1)
            assert drafted.tokens == single.tokens
            assert drafted.stats.decoder_passes < single.stats.decoder_passes


def test_rows_of_a_pool_keep_their_own_lists(trained, speech):
    """Three sessions decoded together: one with a loud list, one with another, one with
    none; each equals its solo run, and the one without equals plain decoding."""
    lists = [LOUD, [("seven eight", 20.0)], None]
    solo = [
        voxtral_mlx.transcribe(trained, speech[i], context_bias=b).tokens
        for i, b in enumerate(lists)
    ]
    assert solo[0] != voxtral_mlx.transcribe(trained, speech[0]).tokens
    pool = SessionPool(trained)
    sessions = [pool.add(stop_at_eos=True, context_bias=b) for b in lists]
    for i, s in enumerate(sessions):
        s.push(speech[i][: 16000 * (i + 1)])  # staggered
    pool.step()
    for i, s in enumerate(sessions):
        s.push(speech[i][16000 * (i + 1) :])
        s.end()
    while any(s.result is None for s in sessions):
        pool.step()
    assert [s.result.tokens for s in sessions] == solo


def test_session_doors_and_a_new_list_mid_stream(trained, speech):
    audio = speech[0]
    want = voxtral_mlx.transcribe(trained, audio, context_bias=LOUD)
    session = Session(trained, stop_at_eos=True, context_bias=LOUD)
    for lo in range(0, len(audio), 7000):
        session.feed(audio[lo : lo + 7000])
    session.finish()
    assert session.result.tokens == want.tokens and session.context_bias.phrases == LOUD
    # the list goes with reset(); set_context_bias replaces it (None: none)
    session.reset()
    session.set_context_bias(None)
    session.feed(audio)
    session.finish()
    assert session.result.tokens == voxtral_mlx.transcribe(trained, audio).tokens
    with pytest.raises(VoxtralError, match="a phrase is empty"):
        Session(trained, context_bias=[""])


def test_transcribe_many_with_a_list(trained, speech):
    results = dict(voxtral_mlx.transcribe_many(trained, speech[:3], context_bias=LOUD))
    for i in range(3):
        assert (
            results[i].tokens
            == voxtral_mlx.transcribe(trained, speech[i], context_bias=LOUD).tokens
        )


def test_a_quantized_model_decodes_with_a_list(speech, tmp_path):
    """`voxtral convert -q` at 4 bits: the list takes effect through the library and the
    command, and drafts still equal one position a pass."""
    folder = convert(ASSET, tmp_path / "q4", bits=4, group_size=64)
    model = voxtral_mlx.load(folder)
    assert model.decoder.layers[0].feed_forward.w1.bits == 4
    zero, one, two = (piece(model, w) for w in ("zero", "one", "two"))
    audio = speech[1]
    drafted = voxtral_mlx.transcribe(model, audio, context_bias=LOUD)
    text = text_ids(drafted.tokens)
    assert set(text) <= {zero, one, two} and one in text and two in text
    single = voxtral_mlx.transcribe(model, audio, context_bias=LOUD, max_draft=1)
    assert drafted.tokens == single.tokens
    wav = tmp_path / "u.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    bias = ["--context-bias", LOUD[0][0], "--context-bias-strength", LOUD[0][1]]
    done = voxtral("transcribe", wav, "-m", folder, *bias)
    assert done.returncode == 0 and done.stdout.strip() == drafted.text, done.stderr


# --- the command line ---


def test_cli_doors_decode_with_a_list(trained, speech, tmp_path):
    """transcribe (one file, and several pooled), live, eval, dictate --dry-run and meeting
    write what the library writes with the same list, given inline or in a file."""
    folder = tmp_path / "speech"
    folder.mkdir()
    for i in (0, 1):
        sf.write(folder / f"u{i}.wav", speech[i], 16000)
        (folder / f"u{i}.txt").write_text("zero one two\n")
    want = [voxtral_mlx.transcribe(trained, speech[i], context_bias=LOUD).text for i in (0, 1)]
    plain = voxtral_mlx.transcribe(trained, speech[0]).text
    assert want[0] != plain
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("zero one two\t20\n")
    inline = ["--context-bias", "zero one two", "--context-bias-strength", "20"]
    from_file = ["--context-bias-file", vocabulary]
    wav = folder / "u0.wav"

    done = voxtral("transcribe", wav, "-m", ASSET, *inline)
    assert done.returncode == 0 and done.stdout.strip() == want[0], done.stderr
    done = voxtral("transcribe", wav, folder / "u1.wav", "-m", ASSET, *from_file)
    assert done.returncode == 0, done.stderr
    named = dict(line.split(": ", 1) for line in done.stdout.splitlines())  # as they finish
    assert {Path(k).name: v for k, v in named.items()} == {"u0.wav": want[0], "u1.wav": want[1]}
    done = voxtral("live", "--input", wav, "--fast", "-m", ASSET, *from_file)
    assert done.returncode == 0 and done.stdout.strip() == want[0], done.stderr
    done = voxtral("eval", folder, "-m", ASSET, "--json", "--normalizer", "basic", *inline)
    assert done.returncode == 0, done.stderr
    assert [f["hypothesis"] for f in json.loads(done.stdout)["files"]] == want
    dictated = voxtral(
        "dictate",
        "-m",
        ASSET,
        "--no-cue",
        "--dry-run",
        "--input",
        wav,
        "--fast",
        *from_file,
        env={"DISPLAY": "", "WAYLAND_DISPLAY": ""},
    )
    assert dictated.returncode == 0, dictated.stderr
    assert dictated.stdout.strip().lower() == want[0].strip().lower()
    silence = tmp_path / "call.wav"  # a silent call: the microphone's words are the file's
    sf.write(silence, np.zeros(32000, np.float32), 16000)
    met = voxtral(
        "meeting", "--input", wav, "--system-input", silence, "--fast", "-m", ASSET, *inline
    )
    assert met.returncode == 0, met.stderr
    assert [line.split(": ", 1) for line in met.stdout.splitlines()] == [["You", want[0].strip()]]


def test_cli_list_errors_exit_2_before_the_model_loads(tmp_path):
    """A bad list is one line and exit code 2; the model (which does not exist) is never
    looked for."""
    bad = tmp_path / "bad.txt"
    bad.write_text("Voxtral\tlots\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    nowhere = tmp_path / "no-model"
    for args, message in [
        (["transcribe", "x.wav", "--context-bias", "a, " + "b" * 101], "at most 100 characters"),
        (["live", "--context-bias-strength", "3"], "needs --context-bias"),
        (["eval", "x", "--context-bias", "a", "--context-bias-strength", "0"], "above 0"),
        (["serve", "--context-bias-file", tmp_path / "missing.txt"], "cannot read"),
        (["dictate", "--context-bias-file", bad], "line 1: the weight after the tab"),
        (["transcribe", "x.wav", "--context-bias", " , "], "lists no phrase"),
        (["live", "--context-bias", "a", "--context-bias", ""], "'' lists no phrase"),
        (["serve", "--context-bias-file", empty], "empty.txt lists no phrase"),
    ]:
        done = voxtral(*args, "-m", nowhere)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("error:") and message in lines[0], (args, lines)


# --- the server ---

DEFAULT = "zero one two"  # the server's list (strength 20): every text position is its


@pytest.fixture(scope="module")
def served(speech, tmp_path_factory):
    """A real `voxtral serve` of the trained model with a server-wide list; a clip."""
    from test_server import start_server

    proc, port = start_server(ASSET, "--context-bias", DEFAULT, "--context-bias-strength", 20)
    wav = tmp_path_factory.mktemp("served") / "u.wav"
    sf.write(wav, speech[1], 16000)
    yield port, wav
    proc.terminate()
    proc.wait(10)


def upload(port, wav, **form):
    import requests

    fields = [(k, v) for k, values in form.items() for v in values]
    with wav.open("rb") as f:
        return requests.post(
            f"http://127.0.0.1:{port}/v1/audio/transcriptions",
            files=[("file", ("u.wav", f))],
            data=fields,
            timeout=120,
        )


def test_uploads_take_context_bias(trained, speech, served):
    """No field: the server's list; repeated fields or a JSON list (pairs take a weight,
    else the server's strength) replace it; an empty JSON list means none; a bad list is
    a 400."""
    port, wav = served
    audio = speech[1]

    def want(bias):
        return voxtral_mlx.transcribe(trained, audio, context_bias=bias).text

    cases = [
        ({}, [(DEFAULT, 20.0)]),
        # the server's strength (20) weighs phrases sent without a weight
        ({"context_bias": ["seven eight", "nine"]}, [("seven eight", 20.0), ("nine", 20.0)]),
        ({"context_bias": ['[["seven eight", 20], "nine"]']}, [("seven eight", 20.0), "nine"]),
        ({"context_bias[]": ["[]"]}, None),
    ]
    for form, bias in cases:
        answer = upload(port, wav, **form)
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == want(bias), form
    assert want([(DEFAULT, 20.0)]) != want(None) != want([("seven eight", 20.0), "nine"])
    for form, message in [
        ({"context_bias": ["x" * 101]}, "at most 100 characters"),
        ({"context_bias": ['[["a", 0]]']}, "above 0"),
        ({"context_bias": ["[oops"]}, "not a valid JSON list"),
    ]:
        answer = upload(port, wav, **form)
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["code"] == "invalid_context_bias", answer.text
        assert message in error["message"]


def test_vllm_dialect_takes_context_bias_in_session_update(trained, served):
    """Our extension: created says the server's list; session.update's list applies from
    the next utterance and done says the one it used; [] means none; a bad list is an
    error event and the connection goes on."""
    from test_server import receive, stream, ws

    port, wav = served
    samples = sf.read(wav, dtype="int16")[0]
    mine = [["seven eight", 20.0], ["nine", 2.0]]
    conn = ws(port)
    assert receive(conn)["context_bias"] == [[DEFAULT, 20.0]]
    for bias, reported in [(mine, mine), ([], [])]:
        conn.send(json.dumps({"type": "session.update", "model": None, "context_bias": bias}))
        text, done = stream(port, samples, conn=conn)
        assert text.strip() == voxtral_mlx.transcribe(trained, wav, context_bias=bias).text
        assert done["context_bias"] == reported
    conn.send(json.dumps({"type": "session.update", "model": None, "context_bias": [""]}))
    error = receive(conn)
    assert error["type"] == "error" and error["code"] == "invalid_context_bias", error
    text, done = stream(port, samples, conn=conn)  # still none: the bad list changed nothing
    assert done["context_bias"] == [] and text.strip() == voxtral_mlx.transcribe(trained, wav).text
    conn.close()


def test_openai_dialect_takes_keywords(trained, served):
    """transcription.keywords (the SDK's field) replaces the server's list, null gives it
    back, [] means none; session.updated says the list; a bad one is an error event. The
    `prompt` stays unused (null). A connection each: a stream carries its state across
    turns."""
    openai = pytest.importorskip("openai")
    from test_openai_realtime import b64_24k, chunks, collect, completed, same_words, session

    port, wav = served
    audio = voxtral_mlx.load_audio(wav)
    plain = voxtral_mlx.transcribe(trained, audio).text
    url = f"http://127.0.0.1:{port}/v1"
    for keywords, said, words in [
        (["seven eight"], ["seven eight"], {"seven", "eight"}),
        (None, [DEFAULT], {"zero", "one", "two"}),
        ([], None, None),
    ]:
        with openai.OpenAI(base_url=url, api_key="unused").realtime.connect(
            extra_query={"intent": "transcription"}
        ) as conn:
            assert conn.recv().session.audio.input.transcription.keywords == [DEFAULT]
            conn.session.update(session=session(None, keywords=keywords, prompt="digits"))
            updated = conn.recv()
            assert updated.type == "session.updated", updated
            assert updated.session.audio.input.transcription.keywords == said
            assert updated.session.audio.input.transcription.prompt is None
            for piece in chunks(b64_24k(audio)):
                conn.input_audio_buffer.append(audio=piece)
            conn.input_audio_buffer.commit()
            transcript = completed(collect(conn, lambda ev: completed(ev)))[0].transcript
            if words is None:
                assert same_words(transcript, plain), (transcript, plain)
            else:
                assert transcript.split() and set(transcript.split()) <= words, transcript
            for bad in ("seven", [""], ["x" * 101]):
                conn.session.update(session=session(None, keywords=bad))
                error = conn.recv()
                assert error.type == "error" and error.error.param == "transcription.keywords"


def test_browser_page_sends_its_vocabulary(trained, served, tmp_path):
    """The page's Vocabulary field: a dropped file's upload and the live session.update
    carry it (and the page keeps it); the words that come back are the list's."""
    test_browser = pytest.importorskip("test_browser")
    if test_browser.pytestmark.args[0]:
        pytest.skip(test_browser.pytestmark.kwargs["reason"])
    port, wav = served
    audio = voxtral_mlx.load_audio(wav)
    expected = voxtral_mlx.transcribe(trained, audio, context_bias=[("seven eight", 20.0)]).text
    mic = tmp_path / "mic.wav"
    sf.write(mic, np.concatenate([np.zeros(32000, np.float32), audio]), 16000, subtype="PCM_16")
    with test_browser.sync_playwright() as p:
        browser = test_browser.launch(
            p,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop",
        )
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.evaluate(test_browser.SPY_ON_SOCKETS)
        page.fill("#vocabulary", " seven eight , ")
        page.dispatch_event("#vocabulary", "change")
        test_browser.drop_file(page, wav)
        page.wait_for_function(
            "want => document.getElementById('transcript').innerText.trim() === want",
            arg=expected,
            timeout=60_000,
        )
        page.reload()  # the field is kept
        page.evaluate(test_browser.SPY_ON_SOCKETS)
        assert page.input_value("#vocabulary") == " seven eight , "
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('transcript').innerText.includes('seven')", timeout=60_000
        )
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('state').textContent === 'done'", timeout=60_000
        )
        words = set(page.locator("#transcript").inner_text().split())
        updates = [m for m in page.evaluate("window.sent") if m["type"] == "session.update"]
        assert [u["context_bias"] for u in updates] == [["seven eight"]]
        assert words <= {"seven", "eight"}, words
        browser.close()


def test_clients_send_their_list_to_a_server(trained, served):
    """`transcribe --server` and `live --server` send the list to our server (the upload's
    context_bias, session.update's); a vLLM server has no such field: live refuses in one
    line, transcribe warns that it may have been ignored."""
    from vllm_standin import VllmStandIn

    port, wav = served
    bias = ["--context-bias", "seven eight", "--context-bias-strength", "20"]
    want = voxtral_mlx.transcribe(trained, wav, context_bias=[("seven eight", 20.0)]).text
    assert want != voxtral_mlx.transcribe(trained, wav).text
    done = voxtral("transcribe", "--server", f"http://127.0.0.1:{port}", wav, *bias)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    assert done.stdout.strip() == want
    done = voxtral("live", "--server", f"ws://127.0.0.1:{port}", "--input", wav, "--fast", *bias)
    assert done.returncode == 0 and done.stdout.strip() == want, done.stderr
    with VllmStandIn(trained) as standin:
        done = voxtral("live", "--server", standin.url, "--input", wav, "--fast", *bias)
        assert done.returncode == 1 and "no context bias" in done.stderr, done.stderr
        url = f"http://127.0.0.1:{standin.port}"
        done = voxtral("transcribe", "--server", url, wav, *bias)
        assert done.returncode == 0 and "may have been ignored" in done.stderr, done.stderr
        assert json.loads(standin.upload_forms[-1]["context_bias"]) == [["seven eight", 20.0]]


def test_mistral_dialect_takes_context_bias(trained, served):
    """Mistral's SDK as code for its cloud sends the list (a phrase each, no weights: the
    server's strength weighs them): realtime's session.update and complete()'s repeated
    field replace the server's list, [] means none (realtime: complete() sends no field for
    it, so the server's list applies), none sent keeps the server's; our
    clients speaking the dialect send theirs; /v1/models says the server takes lists."""
    mistralai = pytest.importorskip("mistralai.client")
    import asyncio

    port, wav = served
    url = f"http://127.0.0.1:{port}"
    client = mistralai.Mistral(api_key="unused", server_url=url)
    (card,) = client.models.list().data
    assert card.audio_transcription_capabilities.context_bias is True
    data = np.clip(sf.read(wav, dtype="int16")[0], -32768, 32767).astype("<i2").tobytes()

    async def realtime(**settings):
        async def audio():
            for i in range(0, len(data), 3200):
                yield data[i : i + 3200]

        events = client.audio.realtime.transcribe_stream(audio(), model=card.id, **settings)
        return [e async for e in events]

    for settings, bias in [
        ({"context_bias": ["seven eight"]}, [("seven eight", 20.0)]),
        ({"context_bias": []}, None),
        ({}, [(DEFAULT, 20.0)]),
    ]:
        want = voxtral_mlx.transcribe(trained, wav, context_bias=bias).text
        events = asyncio.run(asyncio.wait_for(realtime(**settings), 120))
        updated = [e for e in events if type(e).__name__ == "RealtimeTranscriptionSessionUpdated"]
        said = [p for p, _ in bias] if bias else None
        assert all(e.session.context_bias == said for e in updated), updated
        assert events[-1].text == want, (settings, events[-1])
        reply = client.audio.transcriptions.complete(
            model=card.id, file={"content": wav.read_bytes(), "file_name": wav.name}, **settings
        )
        if settings == {"context_bias": []}:  # the SDK sends no field for []: the server's
            want = voxtral_mlx.transcribe(trained, wav, context_bias=[(DEFAULT, 20.0)]).text
        assert reply.text == want, settings
    want = voxtral_mlx.transcribe(trained, wav, context_bias=[("seven eight", 20.0)]).text
    mistral = ["--server", url, "--protocol", "mistral", "--context-bias", "seven eight"]
    done = voxtral("transcribe", wav, *mistral)
    assert done.returncode == 0 and done.stdout.strip() == want, done.stderr
    done = voxtral("live", "--input", wav, "--fast", *mistral)
    assert done.returncode == 0 and done.stdout.strip() == want, done.stderr
    done = voxtral("transcribe", wav, *mistral, "--context-bias-strength", "5")
    assert done.returncode == 0 and "carries no weights" in done.stderr, done.stderr
