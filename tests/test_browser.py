"""The live page served by `voxtral serve`, in a real headless Chromium (Debian's, driven by
Playwright), with Chromium's fake microphone playing a wav, and the tiny trained model."""

import base64
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import voxtral_mlx
from voxtral_mlx.evaluation import basic_normalize

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ASSET = Path(__file__).parent / "assets" / "tiny-voxtral"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

pytestmark = pytest.mark.skipif(
    sync_playwright is None or not Path(CHROMIUM).exists() or shutil.which("espeak-ng") is None,
    reason="needs playwright, chromium and espeak-ng (apt install chromium espeak-ng)",
)
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Two held-out sentences with silence around them, as the fake microphone plays them."""
    from data import make_utterance

    rng = np.random.default_rng(4242)
    utterances = [make_utterance(rng, 3, 5) for _ in range(2)]
    gap = np.zeros(16000, np.float32)
    # 2 s before the first word: Chromium's fake microphone starts playing when it is opened,
    # up to a second before the page's capture gets its first samples on a busy machine
    lead = np.zeros(32000, np.float32)
    audio = np.concatenate([lead, utterances[0].audio, gap, utterances[1].audio, gap, gap, gap])
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path, audio


@pytest.fixture(scope="module")
def server(trained_server):
    return f"http://127.0.0.1:{trained_server}"


@pytest.fixture(scope="module")
def keyed_server():
    from test_server import KEY, start_server

    proc, port = start_server(ASSET, "--api-key", KEY)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def launch(p, *extra):
    return p.chromium.launch(executable_path=CHROMIUM, args=FLAGS + list(extra), headless=True)


def screenshot_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("VOXTRAL_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_live_page_transcribes_the_fake_microphone(server, speech, tmp_path):
    """The fake microphone plays the file once (%noloop) from the moment the page opens it:
    the page must write every word the server transcribes from the same file, in order, at
    the delay chosen on the page; then copy and download (txt, srt) give that transcript."""
    path, audio = speech
    model = voxtral_mlx.load(ASSET)
    expected = basic_normalize(voxtral_mlx.transcribe(model, audio, delay_ms=960).text).split()
    assert len(expected) >= 6
    with sync_playwright() as p:
        browser = launch(
            p,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={path}%noloop",
        )
        context = browser.new_context(viewport={"width": 420, "height": 800})  # narrow
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(server + "/")
        page.evaluate(SPY_ON_SOCKETS)
        # the delays on offer, and the one selected first, are the server's (/health)
        page.wait_for_function("document.getElementById('delay').options.length > 1")
        offered = page.eval_on_selector_all("#delay option", "os => os.map(o => Number(o.value))")
        assert offered == list(voxtral_mlx.VALID_DELAYS_MS)
        assert page.input_value("#delay") == str(model.args.schedule().delay_ms)
        page.select_option("#delay", "960")
        page.focus("#start")
        page.keyboard.press("Enter")  # Start, from the keyboard
        # words appear while the file plays (it lasts len(audio) / 16 kHz seconds)
        deadline = time.monotonic() + len(audio) / 16000 + 30
        while time.monotonic() < deadline:
            heard = basic_normalize(page.locator("#transcript").inner_text()).split()
            if in_order(expected, heard):
                break
            time.sleep(0.25)
        assert in_order(expected, heard), f"page heard {heard}, the server's words are {expected}"
        assert page.locator("#state").inner_text() == "listening"
        assert page.locator("#latency").inner_text().endswith("ms")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "live-page.png"), full_page=True)
        page.click("#start")  # Stop: flushes the last words
        page.wait_for_function(
            "document.getElementById('state').textContent === 'done'", timeout=60_000
        )
        final = basic_normalize(page.locator("#transcript").inner_text()).split()
        # The page resamples in its AudioWorklet, not with soxr, and Chromium's fake capture
        # is not sample-exact: the tiny model may repeat a word (seen once in 8 runs), but the
        # page must not write much more than the file holds.
        assert in_order(expected, final) and len(final) <= 1.25 * len(expected) + 1, final
        assert page.locator("#rtf").inner_text() != "–"
        assert page.locator("#message").is_hidden()
        # the delay chosen on the page is the session's
        updates = [m for m in page.evaluate("window.sent") if m["type"] == "session.update"]
        assert [u["delay_ms"] for u in updates] == [960]
        # copy, and download as txt and srt
        text = page.locator("#transcript").inner_text().strip()
        page.click("#copy")
        assert page.evaluate("navigator.clipboard.readText()") == text
        for fmt in ("txt", "srt"):
            page.select_option("#format", fmt)
            with page.expect_download() as download:
                page.click("#download")
            body = Path(download.value.path()).read_text()
            assert download.value.suggested_filename == f"transcript.{fmt}"
            if fmt == "txt":
                assert body.strip() == text
            else:
                cues = [c.split("\n") for c in body.strip().split("\n\n")]
                assert cues and all(c[0].isdigit() and " --> " in c[1] for c in cues), body
                assert in_order(expected, basic_normalize(" ".join(c[2] for c in cues)).split())
        browser.close()


# Records every JSON message the page sends on its WebSockets (window.sent).
SPY_ON_SOCKETS = """() => {
    window.sent = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        const message = JSON.parse(data);
        if (message.type !== "input_audio_buffer.append") window.sent.push(message);
        return send.call(this, data);
    };
}"""


def in_order(words: list[str], heard: list[str]) -> bool:
    """Every one of `words`, in this order, somewhere in `heard`."""
    rest = iter(heard)
    return all(word in rest for word in words)


def test_dropped_file_is_transcribed(server, speech, tmp_path):
    path, audio = speech
    expected = voxtral_mlx.transcribe(voxtral_mlx.load(ASSET), voxtral_mlx.load_audio(path)).text
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.goto(server + "/")
        drop_file(page, path)
        page.wait_for_function(
            "expected => document.getElementById('transcript').innerText.trim() === expected",
            arg=expected,
            timeout=60_000,
        )
        assert page.locator("#download").is_enabled()
        browser.close()


def drop_file(page, path: Path) -> None:
    """Drop the file on the page's transcript, as a user drags it there."""
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const file = new File([bytes], name, {type: 'audio/wav'});
            const drop = new DataTransfer(); drop.items.add(file);
            document.getElementById('transcript').dispatchEvent(
                new DragEvent('drop', {dataTransfer: drop, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name],
    )


def test_denied_microphone_permission_is_explained(server, tmp_path):
    with sync_playwright() as p:
        browser = launch(p, "--deny-permission-prompts", "--use-fake-device-for-media-stream")
        page = browser.new_page()
        page.goto(server + "/")
        page.click("#start")
        page.wait_for_selector("#message:not([hidden])", timeout=20_000)
        assert "Microphone permission was denied" in page.locator("#message").inner_text()
        page.screenshot(path=str(screenshot_dir(tmp_path) / "permission-denied.png"))
        browser.close()


def test_missing_and_wrong_api_key_are_explained(keyed_server, speech, tmp_path):
    path, _ = speech
    with sync_playwright() as p:
        browser = launch(
            p,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={path}",
        )
        page = browser.new_page()
        page.goto(keyed_server + "/")
        page.click("#start")
        page.wait_for_selector("#message:not([hidden])", timeout=20_000)
        assert "needs an API key" in page.locator("#message").inner_text()
        page.evaluate("localStorage.setItem('voxtral-api-key', 'wrong')")
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('message').innerText.includes('API key is wrong')",
            timeout=20_000,
        )
        page.screenshot(path=str(screenshot_dir(tmp_path) / "wrong-key.png"))
        # the right key, entered through the dialog, lets it listen
        from test_server import KEY

        page.click("#key")
        page.fill("#key-input", KEY)
        page.click("#key-save")
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('state').textContent === 'listening'", timeout=20_000
        )
        browser.close()


def test_the_key_as_the_only_subprotocol_opens_in_chromium(keyed_server):
    """A browser client that offers only `openai-insecure-api-key.KEY` (as OpenAI's browser
    examples do): the handshake must answer with a subprotocol, or Chromium fails it."""
    from test_server import KEY

    script = """([url, key]) => new Promise((done) => {
        const ws = new WebSocket(url, ["openai-insecure-api-key." + key]);
        ws.onmessage = (e) => {
            done({protocol: ws.protocol, first: JSON.parse(e.data).type});
            ws.close();
        };
        ws.onerror = () => done({error: true});
        ws.onclose = (e) => done({closed: e.code});
    })"""
    url = keyed_server.replace("http://", "ws://") + "/v1/realtime"
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.goto(keyed_server + "/")
        got = page.evaluate(script, [url, KEY])
        assert got == {"protocol": f"openai-insecure-api-key.{KEY}", "first": "session.created"}
        browser.close()


def test_dark_theme_and_unreachable_server(speech, tmp_path):
    """With the system in dark mode the page is dark; when the server has gone away, Start and
    a dropped file both say so instead of failing silently."""
    from test_server import start_server

    path, _ = speech
    proc, port = start_server(ASSET)
    url = f"http://127.0.0.1:{port}/"
    with sync_playwright() as p:
        browser = launch(
            p,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={path}",
        )
        shots = screenshot_dir(tmp_path)
        light = browser.new_page(color_scheme="light")
        light.goto(url)
        page = browser.new_page(color_scheme="dark")
        page.goto(url)
        background = "getComputedStyle(document.body).backgroundColor"
        text = "getComputedStyle(document.body).color"
        assert light.evaluate(background) == "rgb(250, 250, 250)"  # --bg of the light theme
        assert page.evaluate(background) == "rgb(22, 22, 26)"  # --bg of the dark theme
        assert page.evaluate(text) == "rgb(236, 236, 241)"
        page.screenshot(path=str(shots / "dark-theme.png"))
        proc.terminate()
        proc.wait(10)
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('message').innerText.includes('server is unreachable')",
            timeout=20_000,
        )
        assert page.locator("#start").inner_text() == "Start"
        page.evaluate(
            """() => {
                const m = document.getElementById('message'); m.textContent = ''; m.hidden = true;
                const file = new File([new Uint8Array(64)], 'x.wav', {type: 'audio/wav'});
                const drop = new DataTransfer(); drop.items.add(file);
                document.getElementById('transcript').dispatchEvent(
                    new DragEvent('drop', {dataTransfer: drop, bubbles: true, cancelable: true}));
            }"""
        )
        page.wait_for_function(
            "document.getElementById('message').innerText.includes('server is unreachable')",
            timeout=20_000,
        )
        page.screenshot(path=str(shots / "unreachable.png"))
        browser.close()
