"""`voxtral serve` on a loopback port, driven by real WebSocket and HTTP clients."""

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from clirun import sigint_default
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import voxtral_mlx
from voxtral_mlx import VoxtralError
from voxtral_mlx.testing import shared_audio

KEY = "s3cret-key"
TINY = Path(__file__).parent / "assets" / "tiny-voxtral"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, *extra, preexec_fn=sigint_default):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            str(port),
            *map(str, extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VOXTRAL_API_KEY": ""},
        preexec_fn=preexec_fn,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"} if "--api-key" in extra else {}
    for _ in range(300):
        try:
            if requests.get(url + "/health", headers=headers, timeout=1).status_code == 200:
                return proc, port
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server(official_dir):
    proc, port = start_server(
        official_dir, "--max-sessions", "4", "--max-message-mb", "1", "--max-backlog", "20"
    )
    yield port
    proc.terminate()
    proc.wait(10)


def pcm16(name: str) -> np.ndarray:
    return sf.read(shared_audio(name), dtype="int16")[0]


def b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


def ws(port, **kwargs):
    conn = connect(f"ws://127.0.0.1:{port}/v1/realtime", open_timeout=10, max_size=2**24, **kwargs)
    return conn.__enter__()  # as `with connect(...)` would; closed by each test


def receive(conn, timeout=60) -> dict:
    return json.loads(conn.recv(timeout=timeout))


def stream(
    port, samples: np.ndarray, chunk: int = 8000, conn=None, delay_ms: int | None = None
) -> tuple[str, dict]:
    """One utterance over the protocol; returns (concatenated deltas, transcription.done)."""
    own = conn is None
    conn = conn or ws(port)
    if own:
        assert receive(conn)["type"] == "session.created"
    update = {"type": "session.update", "model": None}
    if delay_ms is not None:
        update["delay_ms"] = delay_ms
    conn.send(json.dumps(update))
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    for lo in range(0, len(samples), chunk):
        conn.send(
            json.dumps(
                {"type": "input_audio_buffer.append", "audio": b64(samples[lo : lo + chunk])}
            )
        )
    conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    deltas = []
    while True:
        event = receive(conn)
        if event["type"] == "transcription.delta":
            deltas.append(event["delta"])
        elif event["type"] == "transcription.done":
            break
        else:
            raise AssertionError(event)
    # the done text is exactly the deltas' (vLLM's behaviour), leading space and all
    assert event["text"] == "".join(deltas), (event["text"], deltas)
    if own:
        conn.close()
    return "".join(deltas), event


def expected_text(model, name):
    return voxtral_mlx.transcribe(model, voxtral_mlx.load_audio(shared_audio(name))).text


def test_streamed_text_equals_transcribe(server, model):
    deltas, done = stream(server, pcm16("jfk.wav"))
    text = expected_text(model, "jfk.wav")
    assert done["text"] == deltas and deltas.strip() == text
    assert done["usage"]["completion_tokens"] > 100
    assert (
        done["usage"]["total_tokens"]
        == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]
    )


def test_per_session_delay(server, model):
    """session.update may carry delay_ms (our extension, used by the browser page): that
    session transcribes at that delay; an invalid one is an error and the default stays."""
    audio = pcm16("jfk.wav")
    _, done = stream(server, audio, delay_ms=960)
    expected = voxtral_mlx.transcribe(model, audio / 32768.0, delay_ms=960)
    assert done["text"].strip() == expected.text
    assert done["usage"]["prompt_tokens"] == model.args.schedule(960).prompt_length
    conn = ws(server)
    assert receive(conn)["type"] == "session.created"
    conn.send(json.dumps({"type": "session.update", "model": None, "delay_ms": 500}))
    error = receive(conn)
    assert error["type"] == "error" and error["code"] == "invalid_delay"
    assert "1200, 2400" in error["error"]
    _, done = stream(server, audio, conn=conn)
    conn.close()
    assert done["usage"]["prompt_tokens"] == model.args.schedule(480).prompt_length


def test_concurrent_sessions_do_not_mix(server, model):
    """Realtime sessions at once (the fixture's limit, 4), at mixed delays, beside two
    uploads: every stream is a row of the server's batched decoder, and each gets exactly
    its solo transcript."""
    names = ["jfk.wav", "librivox-0870.wav", "librivox-0890.wav", "librivox-0920.wav"]
    jobs = list(zip(names, [480, 80, 2400, 960], strict=True))
    results, uploads = {}, {}

    def run(i):
        name, delay = jobs[i]
        results[i] = stream(server, pcm16(name), chunk=3200, delay_ms=delay)[1]["text"].strip()

    def upload(name):
        with shared_audio(name).open("rb") as f:
            reply = requests.post(
                f"http://127.0.0.1:{server}/v1/audio/transcriptions",
                files={"file": (name, f)},
                timeout=120,
            )
        uploads[name] = reply.json()["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    threads += [threading.Thread(target=upload, args=(n,)) for n in names[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (name, delay) in enumerate(jobs):
        audio = voxtral_mlx.load_audio(shared_audio(name))
        assert results.get(i) == voxtral_mlx.transcribe(model, audio, delay_ms=delay).text
    assert uploads == {n: expected_text(model, n) for n in names[:2]}


def test_bad_input_gets_error_events_and_the_connection_goes_on(server, model):
    conn = ws(server)
    assert receive(conn)["type"] == "session.created"
    bad = [
        ("{not json", "invalid_json"),
        ('["a list"]', "invalid_event"),
        ("{}", "unknown_event"),  # as vLLM: no type is an unknown type
        (json.dumps({"type": "no.such.event"}), "unknown_event"),
        (json.dumps({"type": "input_audio_buffer.commit"}), "model_not_validated"),
        (json.dumps({"type": "session.update"}), "invalid_event"),  # vLLM requires `model`
        (json.dumps({"type": "session.update", "model": "someone/else"}), "model_not_found"),
    ]
    for message, code in bad:
        conn.send(message)
        event = receive(conn)
        assert event["type"] == "error" and event["code"] == code, (message, event)
        if message == json.dumps({"type": "session.update"}):
            assert event["error"] == "Missing required field: model"
    conn.send(json.dumps({"type": "session.update", "model": None}))
    for message, code in [
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": "%%%not base64%%%"}),
            "invalid_audio",
        ),
        (
            json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}
            ),
            "invalid_audio",
        ),
        (json.dumps({"type": "input_audio_buffer.append", "audio": ""}), "invalid_audio"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": 12}), "invalid_audio"),
        (json.dumps({"type": "input_audio_buffer.commit", "final": "maybe"}), "invalid_event"),
    ]:
        conn.send(message)
        event = receive(conn)
        assert event["type"] == "error" and event["code"] == code, (message, event)
    # a final commit with nothing started says nothing (vLLM): the next reply is the next error's
    conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    conn.send(json.dumps({"type": "no.such.event"}))
    assert receive(conn)["code"] == "unknown_event"
    conn.send(b"\x00\x01binary")
    assert receive(conn)["code"] == "invalid_event"
    # after all that, the same connection still transcribes
    _, done = stream(server, pcm16("librivox-0880.wav"), conn=conn)
    assert done["text"].strip() == expected_text(model, "librivox-0880.wav")
    conn.close()


def test_vllm_details_early_audio_lax_final_usage_and_delay(server, model):
    """As vLLM: audio sent before session.update is queued for the first utterance;
    `final` is read as pydantic reads a bool ("false" is false, "yes" true); usage has
    prompt_tokens_details. Ours: a delay changed mid-utterance is the next utterance's, and
    done says the delay it used."""
    samples = pcm16("librivox-0880.wav")
    conn = ws(server)
    created = receive(conn)
    assert created["type"] == "session.created"
    assert created["delay_ms"] == model.args.schedule().delay_ms == 480
    conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(samples[:16000])}))
    conn.send(json.dumps({"type": "session.update", "model": None}))
    conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
    conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(samples[16000:])}))
    conn.send(json.dumps({"type": "session.update", "model": None, "delay_ms": 960}))
    conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": "false"}))  # not final
    conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": "yes"}))
    deltas = []
    while (event := receive(conn))["type"] == "transcription.delta":
        deltas.append(event["delta"])
    assert event["type"] == "transcription.done", event
    assert event["text"].strip() == expected_text(model, "librivox-0880.wav")  # all the audio
    schedule = model.args.schedule(480)
    assert event["delay_ms"] == 480  # the delay it began with
    usage = event["usage"]
    assert usage["prompt_tokens"] == schedule.prompt_length
    assert usage["prompt_tokens_details"] is None
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # the next utterance has the new delay
    _, done = stream(server, samples, conn=conn)
    assert done["delay_ms"] == 960
    assert done["usage"]["prompt_tokens"] == model.args.schedule(960).prompt_length
    conn.close()


def test_oversized_message_closes_with_1009_and_the_server_goes_on(server, model):
    conn = ws(server)
    receive(conn)
    conn.send(json.dumps({"type": "session.update", "model": None}))
    conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (2 * 2**20)}))
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            receive(conn, timeout=10)
    assert closed.value.rcvd.code == 1009
    assert stream(server, pcm16("librivox-0880.wav"))[1]["text"].strip() == expected_text(
        model, "librivox-0880.wav"
    )


def test_client_vanishing_mid_stream(server, model):
    for _ in range(3):
        conn = ws(server)
        receive(conn)
        conn.send(json.dumps({"type": "session.update", "model": None}))
        conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
        conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm16("jfk.wav"))}))
        conn.socket.close()  # no close frame: the client just disappears
    time.sleep(1)
    health = requests.get(f"http://127.0.0.1:{server}/health", timeout=5).json()
    assert health["status"] == "ok"
    assert stream(server, pcm16("librivox-0930.wav"))[1]["text"].strip() == expected_text(
        model, "librivox-0930.wav"
    )
    for _ in range(50):  # the vanished sessions are released
        if requests.get(f"http://127.0.0.1:{server}/health", timeout=5).json()["sessions"] == 0:
            break
        time.sleep(0.1)
    assert requests.get(f"http://127.0.0.1:{server}/health", timeout=5).json()["sessions"] == 0


def test_backpressure_rejects_audio_beyond_the_backlog(official_dir, model):
    proc, port = start_server(official_dir, "--max-backlog", "1")
    try:
        conn = ws(port)
        receive(conn)
        conn.send(json.dumps({"type": "session.update", "model": None}))
        samples = pcm16("jfk.wav")
        codes = []
        for lo in range(0, 16000 * 6, 8000):  # 6 s at once, far faster than real time
            conn.send(
                json.dumps(
                    {"type": "input_audio_buffer.append", "audio": b64(samples[lo : lo + 8000])}
                )
            )
        conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
        conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        while True:
            event = receive(conn)
            if event["type"] == "error":
                codes.append(event["code"])
            if event["type"] == "transcription.done":
                break
        assert codes and set(codes) == {"buffer_full"}
        conn.close()
        # backpressure "wait" (our extension): the same 6 s, nothing dropped, the server
        # stops reading the connection until there is room
        conn = ws(port)
        receive(conn)
        update = {"type": "session.update", "model": None, "backpressure": "wait"}
        conn.send(json.dumps(update))
        conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
        for lo in range(0, 16000 * 6, 8000):
            chunk = b64(samples[lo : lo + 8000])
            conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        while (event := receive(conn))["type"] == "transcription.delta":
            pass
        assert event["type"] == "transcription.done", event
        want = voxtral_mlx.transcribe(model, samples[: 16000 * 6] / 32768.0).text
        assert event["text"].strip() == want
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_session_limit(official_dir):
    proc, port = start_server(official_dir, "--max-sessions", "1")
    try:
        first = ws(port)
        receive(first)
        second = ws(port)
        event = receive(second)
        assert event["type"] == "error" and event["code"] == "too_many_sessions"
        with pytest.raises(ConnectionClosed) as closed:
            receive(second, timeout=10)
        assert closed.value.rcvd.code == 1013
        first.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_api_key_is_enforced(official_dir, model):
    proc, port = start_server(official_dir, "--api-key", KEY)
    url = f"http://127.0.0.1:{port}"
    try:
        assert requests.get(url + "/health", timeout=5).status_code == 401
        assert (
            requests.get(
                url + "/health", headers={"Authorization": "Bearer wrong"}, timeout=5
            ).status_code
            == 401
        )
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as refused:  # a 401 like every endpoint's
                ws(port, additional_headers=headers)
            assert refused.value.response.status_code == 401
            assert "API key" in json.loads(refused.value.response.body)["error"]["message"]
        conn = ws(port, additional_headers={"Authorization": f"Bearer {KEY}"})
        assert receive(conn)["type"] == "session.created"
        conn.close()
        # browsers cannot set headers: the key may come as a WebSocket subprotocol
        conn = ws(port, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"])
        assert receive(conn)["type"] == "session.created"
        conn.close()
        files = {"file": ("a.wav", shared_audio("librivox-0880.wav").read_bytes())}
        assert (
            requests.post(url + "/v1/audio/transcriptions", files=files, timeout=60).status_code
            == 401
        )
        ok = requests.post(
            url + "/v1/audio/transcriptions",
            files=files,
            timeout=60,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert ok.status_code == 200 and ok.json()["text"] == expected_text(
            model, "librivox-0880.wav"
        )
    finally:
        proc.terminate()
        proc.wait(10)


def test_upload_endpoint_formats(server, model):
    url = f"http://127.0.0.1:{server}/v1/audio/transcriptions"
    data = shared_audio("jfk.wav").read_bytes()
    text = expected_text(model, "jfk.wav")
    result = voxtral_mlx.transcribe(model, voxtral_mlx.load_audio(shared_audio("jfk.wav")))

    def post(fmt):
        return requests.post(
            url, files={"file": ("jfk.wav", data)}, data={"response_format": fmt}, timeout=120
        )

    assert post("json").json()["text"] == text
    assert post("text").text.strip() == text
    assert post("srt").text.startswith("1\n00:00:")
    assert post("vtt").text.startswith("WEBVTT\n\n00:00:")
    verbose = post("verbose_json").json()
    assert verbose["text"] == text and abs(verbose["duration"] - 11.0) < 0.01
    assert [(w["word"], w["start"], w["end"]) for w in verbose["words"]] == [
        (w.text, w.start, w.end) for w in result.words
    ]
    assert post("xml").status_code == 400
    bad = requests.post(url, files={"file": ("x.wav", b"RIFFjunkjunk")}, timeout=30)
    assert bad.status_code == 400 and "error" in bad.json()
    assert requests.get(f"http://127.0.0.1:{server}/health", timeout=5).json()["status"] == "ok"


def test_cli_clients_against_our_server(server, model, tmp_path):
    text = expected_text(model, "jfk.wav")
    live = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "live",
            "--server",
            f"ws://127.0.0.1:{server}",
            "--input",
            str(shared_audio("jfk.wav")),
            "--fast",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert live.returncode == 0, live.stderr
    assert live.stdout.strip() == text
    files = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "transcribe",
            "--server",
            f"http://127.0.0.1:{server}",
            str(shared_audio("jfk.wav")),
            "-f",
            "json",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert files.returncode == 0, files.stderr
    assert json.loads((tmp_path / "jfk.json").read_text())["text"] == text
    down = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxtral_cli.app",
            "live",
            "--server",
            f"ws://127.0.0.1:{free_port()}",
            "--input",
            str(shared_audio("jfk.wav")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and down.stderr.startswith("error: cannot connect")


def test_serve_open_opens_the_page_in_the_default_browser(official_dir, tmp_path):
    """`--open` hands the page's address to the default browser (Python's webbrowser, which
    honours $BROWSER: here a script that writes down what it was asked to open)."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxtral_cli.app", "serve", "--model", str(official_dir)]
        + ["--port", str(port), "--host", "0.0.0.0", "--open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
        env={**os.environ, "BROWSER": f"{browser} %s", "VOXTRAL_API_KEY": ""},
    )
    try:
        for _ in range(300):
            if opened.exists() and opened.read_text().strip() or proc.poll() is not None:
                break
            time.sleep(0.1)
        url = opened.read_text().strip()
        assert url == f"http://127.0.0.1:{port}/"  # a wildcard host opens as loopback
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and "<title>" in page.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_ctrl_c_during_an_upload_answers_it_503_in_openais_shape(tmp_path):
    """Ctrl+C while an upload is being decoded: its client gets a 503 in OpenAI's shape (the
    server is stopping) before uvicorn's graceful shutdown runs out, the server exits 0, and
    stderr holds nothing but the `serving` line (it used to print some 64 lines of
    `Exception in ASGI application ... CancelledError`, and the client got a bare 500)."""
    speech = pcm16("jfk.wav")
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(speech, 60), 16000, subtype="PCM_16")  # 11 minutes
    proc, port = start_server(TINY)
    try:
        with ThreadPoolExecutor(1) as pool:
            with path.open("rb") as f:
                reply = pool.submit(
                    requests.post,
                    f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                    files={"file": ("long.wav", f)},
                    timeout=120,
                )
                for _ in range(600):  # until the upload is being decoded
                    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
                    if health["uploads"] or reply.done():
                        break
                    time.sleep(0.05)
                assert health["uploads"] == 1, reply.result().text
                proc.send_signal(signal.SIGINT)
                answer = reply.result()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error" and "stopping" in error["message"]
    assert proc.returncode == 0, err
    assert [line for line in err.splitlines() if not line.startswith("serving ")] == [], err


def test_ctrl_c_after_serving_exits_cleanly():
    """Ctrl+C after an upload and a realtime session, with a second session still connected
    and being transcribed: uvicorn's graceful shutdown, exit status 0, nothing on stderr but
    the `serving` line. The model thread's MLX state used to be left to interpreter exit,
    which aborted now and then ("terminate called without an active exception", exit 134):
    three servers, for an intermittent failure."""
    samples = pcm16("jfk.wav")
    wav = io.BytesIO()
    sf.write(wav, samples[: 3 * 16000], 16000, format="WAV", subtype="PCM_16")
    with ThreadPoolExecutor(3) as pool:  # started together: the imports take seconds
        servers = list(pool.map(lambda _: start_server(TINY), range(3)))
    sessions = []
    try:
        for proc, port in servers:
            upload = requests.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                files={"file": ("jfk.wav", wav.getvalue())},
                timeout=60,
            )
            assert upload.status_code == 200, upload.text
            assert stream(port, samples[: 3 * 16000])[1]["type"] == "transcription.done"
            conn = ws(port)  # left open, mid-utterance
            sessions.append(conn)
            assert receive(conn)["type"] == "session.created"
            conn.send(json.dumps({"type": "session.update", "model": None}))
            conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
            conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(samples)}))
            assert receive(conn)["type"] == "transcription.delta"  # the worker is at it
            proc.send_signal(signal.SIGINT)
        for proc, _ in servers:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            for bad in ("terminate called", "Aborted", "Traceback"):
                assert bad not in err
            assert [line for line in err.splitlines() if not line.startswith("serving ")] == []
    finally:
        for conn in sessions:
            conn.close()
        for proc, _ in servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_health_offers_the_delays_and_the_default(server, model):
    health = requests.get(f"http://127.0.0.1:{server}/health", timeout=10).json()
    assert health["valid_delays_ms"] == list(voxtral_mlx.VALID_DELAYS_MS)
    assert health["delay_ms"] == model.args.schedule().delay_ms  # the checkpoint's own


def test_connection_states_allow_only_the_protocol_transitions():
    from voxtral_mlx.serve.vllm import TRANSITIONS, State, VllmDialect

    assert set(TRANSITIONS) == set(State) and TRANSITIONS[State.CLOSED] == set()
    assert all(State.CLOSED in TRANSITIONS[s] for s in State if s is not State.CLOSED)
    conn = VllmDialect.__new__(VllmDialect)
    conn.state = State.OPEN
    conn.move(State.READY)
    with pytest.raises(RuntimeError, match="ready -> open"):
        conn.move(State.OPEN)
    conn.move(State.CLOSED)
    with pytest.raises(RuntimeError, match="closed -> ready"):
        conn.move(State.READY)


def test_non_finite_samples_are_a_clear_error_everywhere(server, tmp_path, official_dir):
    """One NaN in a float WAV: the library raises, the CLI says so in one line and exits 1,
    the upload endpoint answers 400 with the same message (not 200 with an empty text)."""
    audio = voxtral_mlx.load_audio(shared_audio("jfk.wav"))
    audio[16000 * 9] = np.nan  # near the end: it would have cost the last word
    path = tmp_path / "nan.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    message = "1 sample that is not a number (NaN or infinite), the first at 9.00 s"
    with pytest.raises(VoxtralError, match=re.escape(message)):
        voxtral_mlx.load_audio(path)
    reply = requests.post(
        f"http://127.0.0.1:{server}/v1/audio/transcriptions",
        files={"file": ("nan.wav", path.read_bytes())},
        timeout=60,
    )
    assert reply.status_code == 400 and message in reply.json()["error"]["message"]
    done = subprocess.run(
        [sys.executable, "-m", "voxtral_cli.app", "transcribe", str(path), "-m", str(official_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_commands_start_under_a_low_open_file_limit(official_dir, tmp_path):
    """A hard open-file limit below the 4096 a server asks for: the commands start anyway;
    serve says so in one line, transcribe (which needs few files) says nothing."""
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    warning = "warning: the open-file limit stays at 1024 (hard limit 1024"
    done = subprocess.run(
        [sys.executable, "-m", "voxtral_cli.app", "transcribe", str(shared_audio("jfk.wav"))]
        + ["--model", str(official_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=low_limit,
    )
    assert done.returncode == 0 and done.stdout.strip() and done.stderr == "", done.stderr
    proc, port = start_server(official_dir, preexec_fn=low_limit)
    try:
        reply = requests.post(
            f"http://127.0.0.1:{port}/v1/audio/transcriptions",
            files={"file": ("jfk.wav", shared_audio("jfk.wav").read_bytes())},
            timeout=120,
        )
        assert reply.status_code == 200 and reply.json()["text"] == done.stdout.strip()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert stderr.count(warning) == 1
