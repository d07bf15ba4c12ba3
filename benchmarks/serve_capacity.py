"""How many concurrent real-time streams `voxtral serve` sustains: this tree's server (every
stream a row of one batched decoder) against another checkout's (e.g. the round-robin server
of an earlier commit), on one checkpoint, in one run.

N clients each stream a clip in 100 ms messages at real-time pace over /v1/realtime, then
the final commit; a level passes when every stream's transcription.done arrives within
`--max-lag` seconds of its final commit and no error came. N grows through `--levels` until
a level fails; the capacity is the last level that passed. Loopback only.

    git worktree add /tmp/baseline <commit>
    python benchmarks/serve_capacity.py --baseline /tmp/baseline --enc 256 4 --dec 768 12
    python benchmarks/serve_capacity.py --model /work/fullsize/q4 --levels 1 2 4 8 16 32 64

Without `--baseline` only this tree's server is measured; with `--model DIR` that
checkpoint is served instead of a random one of `--enc`/`--dec`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf
from websockets.sync.client import connect

from voxtral_mlx.bench import architecture, chip_name
from voxtral_mlx.testing import save_random, shared_audio

ROOT = Path(__file__).resolve().parents[1]
CHUNK_SECONDS = 0.1


def write_checkpoint(path: Path, enc: tuple, dec: tuple, vocab: int) -> None:
    """Random weights of the real structure (64-wide heads) at the widths given, official
    layout: enc = (dim, layers), dec = (dim, layers)."""
    (e_dim, e_layers), (d_dim, d_layers) = enc, dec
    heads = d_dim // 64
    args = architecture(
        (e_dim, e_layers, e_dim // 64, 4 * e_dim),
        (d_dim, d_layers, heads, heads // 4, 3 * d_dim),
        vocab,
        64,
    )
    save_random(path, args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tree: Path, model: Path, max_sessions: int) -> tuple[subprocess.Popen, int]:
    """`voxtral serve` from the checkout `tree` (its cli/ as voxtral_cli)."""
    shim = Path(tempfile.mkdtemp())
    (shim / "voxtral_cli").symlink_to(tree / "cli")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{tree}:{shim}", "VOXTRAL_API_KEY": ""}
    cmd = [sys.executable, "-m", "voxtral_cli.app", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--max-sessions", str(max_sessions)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # a full-size checkpoint may load for minutes
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc, port
        except requests.ConnectionError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
    raise RuntimeError("server did not start")


def client(port: int, pcm: np.ndarray, lead: float, out: dict) -> None:
    """One real-time stream; out gets the lag of its done after the final commit."""
    time.sleep(lead)
    with connect(f"ws://127.0.0.1:{port}/v1/realtime", open_timeout=30, max_size=2**24) as ws:
        ws.recv(timeout=30)  # session.created
        ws.send(json.dumps({"type": "session.update", "model": None}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        step = int(16000 * CHUNK_SECONDS)
        start = time.perf_counter()
        for i, lo in enumerate(range(0, len(pcm), step)):
            time.sleep(max(start + (i + 1) * CHUNK_SECONDS - time.perf_counter(), 0))
            chunk = base64.b64encode(pcm[lo : lo + step].tobytes()).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        final = time.perf_counter()
        while True:
            event = json.loads(ws.recv(timeout=120))
            if event["type"] == "error":
                out["error"] = event.get("code")
            if event["type"] == "transcription.done":
                out["lag"] = time.perf_counter() - final
                return


def level(port: int, pcm: np.ndarray, n: int) -> tuple[float, str | None]:
    """N streams at once: (worst lag, first error)."""
    rng = np.random.default_rng(n)
    results = [{} for _ in range(n)]
    threads = [
        threading.Thread(target=client, args=(port, pcm, float(rng.uniform(0, 1)), results[i]))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    lags = [r.get("lag", float("inf")) for r in results]
    errors = [r["error"] for r in results if "error" in r]
    return max(lags), (errors[0] if errors else None)


def capacity(label: str, tree: Path, model: Path, pcm: np.ndarray, levels, max_lag) -> int:
    proc, port = start(tree, model, max(levels))
    best = 0
    try:
        for n in levels:
            worst, error = level(port, pcm, n)
            ok = worst <= max_lag and error is None
            print(f"{label:>12} N={n:>3}: worst lag {worst:6.2f} s, error {error} -> "
                  f"{'ok' if ok else 'FAIL'}", flush=True)  # fmt: skip
            if not ok:
                break
            best = n
    finally:
        proc.terminate()
        proc.wait(30)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="checkout to compare with")
    parser.add_argument("--model", type=Path, help="serve this checkpoint (not --enc/--dec)")
    parser.add_argument("--enc", type=int, nargs=2, default=[256, 4], metavar=("DIM", "LAYERS"))
    parser.add_argument("--dec", type=int, nargs=2, default=[768, 12], metavar=("DIM", "LAYERS"))
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--clip", default="librivox-0890.wav")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16, 24])
    parser.add_argument("--max-lag", type=float, default=2.0)
    a = parser.parse_args()
    pcm = sf.read(shared_audio(a.clip), dtype="int16")[0]
    with tempfile.TemporaryDirectory() as tmp:
        if a.model:
            model, described = a.model, f"{a.model}"
        else:
            model = Path(tmp) / "model"
            write_checkpoint(model, a.enc, a.dec, a.vocab)
            described = (
                f"random weights, encoder {a.enc[1]} layers of {a.enc[0]}, decoder "
                f"{a.dec[1]} layers of {a.dec[0]}, vocabulary {a.vocab}, fp32"
            )
        print(
            f"{chip_name()}; checkpoint: {described}; clip {a.clip} ({len(pcm) / 16000:.1f} s) "
            f"streamed in real time, {CHUNK_SECONDS * 1000:.0f} ms messages; pass: every done "
            f"within {a.max_lag} s of its final commit, no error"
        )
        ours = capacity("this tree", ROOT, model, pcm, a.levels, a.max_lag)
        if a.baseline is None:
            print(f"capacity: {ours} streams")
            return
        theirs = capacity("baseline", a.baseline.resolve(), model, pcm, a.levels, a.max_lag)
    print(f"capacity: this tree {ours} streams, baseline {theirs} streams")


if __name__ == "__main__":
    main()
