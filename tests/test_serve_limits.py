"""`voxtral serve` as a shared server: nobody can starve it or exhaust it. Real clients on
loopback (raw sockets where a misbehaving client is the point), one server with small limits."""

import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from test_server import KEY, b64, free_port, pcm16, receive, start_server, stream, ws
from websockets.exceptions import ConnectionClosed

import voxtral_mlx
from voxtral_mlx.testing import shared_audio

AUTH = {"Authorization": f"Bearer {KEY}"}
NAME = "voxtral-test"  # --served-model-name


@pytest.fixture(scope="module")
def limited(official_dir, tmp_path_factory):
    """A keyed server with small limits, its temporary files in a folder of its own."""
    tmp = tmp_path_factory.mktemp("server-tmp")
    # MLX's CPU backend keeps the kernels it compiles in TMPDIR/mlx: share the usual cache
    (tmp / "mlx").symlink_to(Path(tempfile.gettempdir()) / "mlx", target_is_directory=True)
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)  # the server process inherits it
    try:
        proc, port = start_server(
            official_dir,
            *("--api-key", KEY, "--served-model-name", NAME, "--max-sessions", "2"),
            *("--idle-timeout", "3", "--read-timeout", "2", "--max-connections", "24"),
            *("--max-upload-mb", "12"),
        )
    finally:
        os.environ.pop("TMPDIR") if old is None else os.environ.update(TMPDIR=old)
    yield port, tmp
    proc.terminate()
    proc.wait(10)


def leftovers(tmp: Path) -> list[str]:
    """Files the server left in its temporary folder (MLX's kernel cache aside)."""
    return [p.name for p in tmp.iterdir() if p.name != "mlx"]


def keyed_ws(port):
    conn = ws(port, additional_headers=AUTH)
    assert receive(conn)["type"] == "session.created"
    return conn


def health(port) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/health", headers=AUTH, timeout=10).json()


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def raw_request(port, head: bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    """Send `head` (and `body`) on a plain socket; what comes back within `wait` seconds."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body)
        s.settimeout(wait)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
                if complete(reply):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return reply


def complete(reply: bytes) -> bool:
    """A whole HTTP response: its head, and as much body as its Content-Length says."""
    head, found, body = reply.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is not None and len(body) >= int(length.group(1))


# --- 1. uploads share the model: live first ---


def test_live_passes_come_before_an_uploads(model):
    """In a job, the live sessions' positions are decoded first and go out before any
    upload pass; uploads, a pool of their own, get the passes the live sessions leave."""
    from voxtral_mlx.serve.scheduler import Scheduler

    scheduler = Scheduler(model)
    upload, live = scheduler._add(None, upload=True), scheduler._add(None, upload=False)
    assert upload.pool is not live.pool and upload.stop_at_eos and not live.stop_at_eos
    audio = voxtral_mlx.load_audio(shared_audio("jfk.wav"))
    upload.push(audio)
    live.push(audio[: 16000 * 5])
    jobs = 0
    while live.decodable_positions:  # the live session's passes, each job's events sent
        events, more = scheduler._job({})
        assert live in events and upload not in events and more
        jobs += 1
    assert jobs and upload.decodable_positions
    events, _ = scheduler._job({})  # nothing live left: the upload's turn
    assert upload in events and live not in events


def test_a_live_session_finishes_while_a_long_upload_runs(limited, tmp_path):
    """A live utterance's done comes while an upload 30 times as long is still decoding
    (before the fix, the whole upload was one job ahead of it)."""
    from concurrent.futures import ThreadPoolExecutor

    port, _ = limited
    speech = pcm16("jfk.wav")
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(speech, 30), 16000, subtype="PCM_16")  # 5.5 minutes, 10.5 MB
    finished = {}

    def post():
        with path.open("rb") as f:
            reply = requests.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                headers=AUTH,
                files={"file": ("long.wav", f)},
                timeout=600,
            )
        finished["upload"] = time.monotonic()
        return reply

    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(post)
        assert wait_for(lambda: health(port)["uploads"] == 1)  # it is decoding
        _, done = stream(port, speech[: 16000 * 3], chunk=1600, conn=keyed_ws(port))
        finished["live"] = time.monotonic()
        assert job.result().status_code == 200
    assert done["type"] == "transcription.done" and finished["live"] < finished["upload"]


def test_an_upload_whose_client_left_stops_decoding(limited, tmp_path):
    port, _ = limited
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(pcm16("jfk.wav"), 30), 16000, subtype="PCM_16")
    files = {"file": ("long.wav", path.read_bytes())}
    body, content_type = requests.models.RequestEncodingMixin._encode_files(files, {})
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + body)
        assert wait_for(lambda: health(port)["uploads"] == 1)
    # the client is gone: its decoding stops (it had minutes of audio left)
    assert wait_for(lambda: health(port)["uploads"] == 0, 5)


# --- 2. slots cannot be held forever ---


def test_an_idle_connection_is_closed_and_its_slot_freed(limited):
    port, _ = limited
    conns = [keyed_ws(port) for _ in range(2)]  # --max-sessions 2: all slots
    for conn in conns:
        conn.send(json.dumps({"type": "session.update", "model": NAME}))
    third = ws(port, additional_headers=AUTH)
    assert receive(third)["code"] == "too_many_sessions"
    third.close()
    for conn in conns:  # nothing sent for 3 s: told why, then closed
        event = receive(conn, timeout=15)
        assert event["type"] == "error" and event["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed) as closed:
            receive(conn, timeout=15)
        assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
    assert wait_for(lambda: health(port)["sessions"] == 0)
    conn = keyed_ws(port)  # the slots are free again
    conn.close()


def test_a_client_that_does_not_read_is_dropped(limited):
    """A client floods the server with bad events and reads none of the error replies:
    past the bound of unsent events it is cut off, its slot freed, and the server goes on."""
    port, _ = limited
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    from websockets.sync.client import connect

    conn = connect(
        f"ws://127.0.0.1:{port}/v1/realtime", sock=sock, additional_headers=AUTH, max_queue=1
    ).__enter__()
    bad = json.dumps({"type": "nonsense." + "x" * 200})

    def flood():
        try:
            for _ in range(20000):  # about 3 MB of error replies nobody reads
                conn.send(bad)
        except (ConnectionClosed, OSError):
            pass  # cut off while sending: as it should be

    threading.Thread(target=flood, daemon=True).start()
    assert wait_for(lambda: health(port)["sessions"] == 0, 30)
    sock.close()
    _, done = stream(port, pcm16("jfk.wav")[:16000], conn=keyed_ws(port))
    assert done["type"] == "transcription.done"


# --- 3. silent connections ---


def test_silent_connections_are_closed_and_bounded(limited):
    port, _ = limited
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    try:
        # beyond --max-connections 24, connections are closed as they open
        closed_at_once = 0
        for s in silent[24:]:
            s.settimeout(1.0)
            try:
                closed_at_once += s.recv(1) == b""
            except ConnectionResetError:
                closed_at_once += 1
            except TimeoutError:
                pass
        assert closed_at_once >= 6
        # the others: closed after --read-timeout 2 s without request headers
        s = silent[0]
        s.settimeout(10)
        tic = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - tic < 8
    finally:
        for s in silent:
            s.close()
    assert wait_for(lambda: health(port)["status"] == "ok")


def test_a_stalled_upload_times_out_and_a_huge_one_is_refused_unread(limited):
    port, _ = limited
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
    )
    huge = raw_request(port, (head + "Content-Length: 10737418240\r\n\r\n").encode(), b"--b")
    assert huge.startswith(b"HTTP/1.1 413") and b"--max-upload-mb" in huge
    stalled = raw_request(port, (head + "Content-Length: 5000\r\n\r\n").encode(), b"--b\r\n")
    assert stalled.startswith(b"HTTP/1.1 408") and b"stalled" in stalled


# --- 4. back-to-back utterances ---


def test_back_to_back_utterances_each_get_their_own_done(limited, model):
    """commit, A, final, commit, B, final, all sent at once: two dones, A's and B's."""
    port, _ = limited
    a, b = pcm16("jfk.wav")[: 16000 * 4], pcm16("librivox-0880.wav")[: 16000 * 4]
    conn = keyed_ws(port)
    conn.send(json.dumps({"type": "session.update", "model": NAME}))
    for audio in (a, b):
        conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
        for lo in range(0, len(audio), 8000):
            chunk = b64(audio[lo : lo + 8000])
            conn.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        conn.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    dones, deltas, times = [], [""], []
    while len(dones) < 2:
        event = receive(conn)
        if event["type"] == "transcription.delta":
            deltas[-1] += event["delta"]
            times.append(event)
        elif event["type"] == "transcription.done":
            dones.append(event)
            deltas.append("")
        else:
            raise AssertionError(event)
    conn.close()
    assert all(0 <= d["start"] <= d["end"] <= 4.0 for d in times)  # never past the audio
    for done, audio, text in zip(dones, (a, b), deltas[:2], strict=True):
        want = voxtral_mlx.transcribe(model, audio / 32768.0).text
        assert done["text"] == text and text.strip() == want


# --- 5. the key before the body, the size limit while reading ---


def test_uploads_are_refused_before_their_body_is_read(limited):
    port, tmp = limited
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 157286400\r\n\r\n"
    )
    # no key: 401 while the client has sent 3 bytes of its 150 MB
    reply = raw_request(port, head.encode(), b"--b")
    assert reply.startswith(b"HTTP/1.1 401")
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert "API key" in body["error"]["message"]
    # chunked, no length: reading stops at --max-upload-mb 12
    files = {"file": ("big.wav", b"RIFF" + bytes(13 * 2**20))}
    body, content_type = requests.models.RequestEncodingMixin._encode_files(files, {})
    reply = requests.post(
        f"http://127.0.0.1:{port}/v1/audio/transcriptions",
        headers={**AUTH, "Content-Type": content_type},
        data=iter([body[i : i + 2**16] for i in range(0, len(body), 2**16)]),
        timeout=30,
    )
    assert reply.status_code == 413
    assert leftovers(tmp) == []  # no temporary file left behind


# --- 8. error replies ---


def test_error_replies_neither_leak_nor_mislead(limited):
    port, tmp = limited
    url = f"http://127.0.0.1:{port}"
    wav = shared_audio("jfk.wav").read_bytes()
    m4a = b"\x00\x00\x00\x20ftypM4A " + bytes(500)  # not what soundfile reads
    for name, data in (("talk.wav", wav[:30]), ("talk.wav", wav[:44]), ("x.m4a", m4a)):
        reply = requests.post(
            url + "/v1/audio/transcriptions", headers=AUTH, files={"file": (name, data)}
        )
        message = reply.json()["error"]["message"]
        assert reply.status_code == 400 and name in message, message
        assert "/tmp" not in message and str(tmp) not in message
        if name.endswith(".wav"):
            assert "ffmpeg" not in message  # a broken WAV is not a missing decoder
    assert leftovers(tmp) == []
    # one error shape for every status: 401 (no key), 400 (no file), 404 (no such path)
    for reply, status in (
        (requests.get(url + "/v1/models", timeout=10), 401),
        (requests.post(url + "/v1/audio/transcriptions", headers=AUTH, data={"model": NAME}), 400),
        (requests.get(url + "/v1/nothing", headers=AUTH, timeout=10), 404),
    ):
        error = reply.json()["error"]
        assert reply.status_code == status and error["message"] and error["type"], reply.text
    # the API schema is behind the key; no docs pages
    assert requests.get(url + "/openapi.json", timeout=10).status_code == 401
    schema = requests.get(url + "/openapi.json", headers=AUTH, timeout=10).json()
    assert "/v1/audio/transcriptions" in schema["paths"]
    assert requests.get(url + "/docs", headers=AUTH, timeout=10).status_code == 404
    # the served name, not the path of the weights
    assert [m["id"] for m in requests.get(url + "/v1/models", headers=AUTH).json()["data"]] == [
        NAME
    ]
    # an unknown event type is not echoed back in full
    conn = keyed_ws(port)
    conn.send(json.dumps({"type": "y" * 2**19}))
    event = receive(conn)
    assert event["code"] == "unknown_event" and len(event["error"]) < 200
    conn.send(json.dumps({"type": "session.update", "model": "/some/path"}))
    assert receive(conn)["code"] == "model_not_found"
    conn.send(json.dumps({"type": "session.update", "model": NAME}))
    conn.close()


def test_the_key_as_subprotocol_is_answered_in_the_handshake(limited):
    from websockets.sync.client import connect

    port, _ = limited
    with connect(
        f"ws://127.0.0.1:{port}/v1/realtime", subprotocols=[f"openai-insecure-api-key.{KEY}"]
    ) as conn:
        assert conn.subprotocol == f"openai-insecure-api-key.{KEY}"
        assert receive(conn)["type"] == "session.created"


def test_server_config_checks_its_limits():
    """A library user's ServerConfig refuses what the CLI refuses (a VoxtralError that names
    the field), and takes the smallest limits that make sense."""
    from voxtral_mlx.serve import ServerConfig
    from voxtral_mlx.serve.config import ConfigError

    with pytest.raises(voxtral_mlx.VoxtralError, match="max_backlog_seconds -1"):
        ServerConfig(model_name="m", max_backlog_seconds=-1)
    for field, value in (
        ("max_sessions", 0),
        ("max_connections", 0),
        ("max_message_bytes", 0),
        ("max_upload_bytes", -1),
        ("idle_timeout", float("inf")),
        ("read_timeout", float("nan")),
        ("served_model_name", " "),
        ("delay_ms", 500),
        ("context_bias", (("", 2.0),)),
        ("context_bias_strength", 0),
    ):
        with pytest.raises(ConfigError, match=field) as caught:
            ServerConfig(model_name="m", **{field: value})
        assert caught.value.field == field
    with pytest.raises(voxtral_mlx.VoxtralError, match="invalid delay 500"):
        ServerConfig(model_name="m", delay_ms=500)
    listed = ServerConfig("m", context_bias=("Northwind", ("Quillara", 4)))
    assert listed.context_bias == (("Northwind", 2.0), ("Quillara", 4.0))
    small = ServerConfig("m", 80, max_sessions=1, max_connections=1, max_backlog_seconds=0.1)
    assert (small.max_sessions, small.max_connections, small.delay_ms) == (1, 1, 80)


def test_the_upload_limit_is_said_as_given():
    """--max-upload-mb 0.1 is 104857 bytes; the 413's message says 0.1 MB, not 0.0999994."""
    from voxtral_mlx.serve.upload_form import _too_large

    for mb, said in ((0.1, "0.1 MB"), (200, "200 MB"), (1.5, "1.5 MB")):
        assert f"limit of {said} (--max-upload-mb)" in _too_large(int(mb * 2**20))


def test_serve_rejects_bad_limits(official_dir):
    import subprocess
    import sys

    for args in (("--idle-timeout", "0"), ("--max-upload-mb", "-1"), ("--max-connections", "0")):
        done = subprocess.run(
            [sys.executable, "-m", "voxtral_cli.app", "serve", "--model", str(official_dir)]
            + ["--port", str(free_port()), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and args[0] in done.stderr and "Traceback" not in done.stderr


def test_a_client_without_the_key_is_told_so(limited):
    import subprocess
    import sys

    port, _ = limited
    done = subprocess.run(
        [sys.executable, "-m", "voxtral_cli.app", "live", "--server", f"ws://127.0.0.1:{port}"]
        + ["--input", str(shared_audio("jfk.wav")), "--fast"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VOXTRAL_API_KEY": ""},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "refused the API key (HTTP 401)" in done.stderr and "--api-key" in done.stderr
