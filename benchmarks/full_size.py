"""The real size through every door: a random-weight checkpoint at the real shapes (4.4 B
parameters, bf16, the hub's official layout), its 4-bit conversion, and each through
`voxtral transcribe`, `voxtral live --input`, `voxtral serve` (one upload, one realtime
session) and `voxtral bench`.

Every command runs in its own process, started through a probe that times
`voxtral_mlx.load` and records MLX's memory counters and the model's weight and
per-stream cache bytes (`stream_bytes`); the process's peak resident memory comes from the
kernel (wait4). On a GPU, MLX's figures are the GPU's memory and the process's the host's.
Each figure is added to `--json` under its model and command (runs can be
split: one model, one command at a time), and the table of all of them is printed.

    python benchmarks/full_size.py --dir /work/fullsize --clip-seconds 1
    python benchmarks/full_size.py --dir /work/fullsize --models q4 --commands bench
    python benchmarks/full_size.py --dir /tmp/fs --size small      # the same steps, small
    python benchmarks/full_size.py --kernels    # one FFN matrix product in each precision
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import soundfile as sf

from voxtral_mlx.testing import (
    FULL_SIZE,
    SMALL_SIZE,
    params_json,
    shared_audio,
    write_random_official,
)

GB = 10**9  # decimal, as the checkpoint sizes are quoted (8.86 GB)
COMMANDS = ["load", "transcribe", "live", "serve", "bench"]  # load: what every door does first
SIZES = {"full": FULL_SIZE, "small": SMALL_SIZE}
CONVERSIONS = {  # model -> the model it is converted from, `voxtral convert` options
    "q4": ("bf16", ["-q", "--q-bits", "4"]),
    # fp32 scales: MLX's CPU kernels for bf16 scales are slow (RESULTS.md); from the 4-bit
    # model, as converting the bf16 one with --dtype float32 holds it all in fp32 first
    "q4-f32": ("q4", ["--dtype", "float32"]),
}


# --- in the child: the voxtral command, instrumented ---


def probe(record_file: Path, argv: list[str]) -> None:
    """Run `voxtral ARGV` in this process; at exit, write to `record_file` the load time,
    the model's weight and per-stream cache bytes, and MLX's memory counters."""
    import atexit

    import mlx.core as mx
    from mlx.utils import tree_flatten

    import voxtral_mlx
    from voxtral_mlx.session import stream_bytes

    record = {"rss_start": status_bytes("VmRSS")}
    real_load = voxtral_mlx.load

    def timed_load(*args, **kwargs):
        tic = time.perf_counter()
        model = real_load(*args, **kwargs)
        record["load_s"] = time.perf_counter() - tic
        record["weights"] = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        record["stream_bytes"] = stream_bytes(model)
        record["rss_loaded"] = status_bytes("VmRSS")
        record["mlx_loaded"] = mx.get_active_memory()
        record["mlx_peak_load"] = mx.get_peak_memory()  # `bench` resets the counter later
        return model

    def write() -> None:
        record["mlx_peak_end"] = mx.get_peak_memory()
        record_file.write_text(json.dumps(record))

    voxtral_mlx.load = timed_load
    atexit.register(write)
    if argv[0] == "load":
        voxtral_mlx.load(argv[1])
        return
    sys.argv = ["voxtral", *argv]
    from voxtral_cli.app import main

    main()


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


# --- in the parent: each command a probed child ---


class Child:
    """`voxtral ARGV` in a probed child process, its output in files so that `wait` can
    reap it with wait4 (the kernel's peak resident size of that process)."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.record = Path(tempfile.mkstemp(suffix=".json")[1])
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        cmd = [sys.executable, __file__, "--probe", str(self.record), "--", *argv]
        self.tic = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, text=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def error(self) -> str:
        self.err.seek(0)
        return self.err.read()[-2000:]

    def wait(self) -> dict:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - self.tic
        if code != 0:
            raise RuntimeError(f"voxtral {' '.join(self.argv)}: exit {code}\n{self.error()}")
        self.out.seek(0)
        text = self.record.read_text()
        self.record.unlink()
        figures = json.loads(text) if text else {}
        return {
            **figures,
            "wall_s": wall,
            "rss_peak": usage.ru_maxrss * 1024,
            "stdout": self.out.read(),
        }


def run(argv: list[str]) -> dict:
    return Child(argv).wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: Path, clip: Path) -> dict:
    """`voxtral serve`: one upload, then one realtime session streaming the clip in 100 ms
    messages as fast as they go; SIGINT stops it."""
    from websockets.sync.client import connect

    port = free_port()
    child = Child(["serve", "--model", str(model), "--port", str(port), "--max-sessions", "2"])
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if requests.get(url + "/health", timeout=5).ok:
                break
        except requests.ConnectionError:
            if not child.alive():
                raise RuntimeError(f"voxtral serve did not start\n{child.error()}") from None
            time.sleep(1)
    tic = time.perf_counter()
    with open(clip, "rb") as f:
        upload = requests.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=None)
    upload.raise_for_status()
    upload_s = time.perf_counter() - tic
    pcm = sf.read(clip, dtype="int16")[0]
    tic = time.perf_counter()
    with connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=2**24) as ws:
        ws.recv()  # session.created
        ws.send(json.dumps({"type": "session.update", "model": None}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        for lo in range(0, len(pcm), 1600):
            chunk = base64.b64encode(pcm[lo : lo + 1600].tobytes()).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        while (event := json.loads(ws.recv()))["type"] != "transcription.done":
            if event["type"] == "error":
                raise RuntimeError(f"realtime session: {event}")
    realtime_s = time.perf_counter() - tic
    child.proc.send_signal(signal.SIGINT)
    figures = child.wait()
    return {
        **figures,
        "upload_s": upload_s,
        "realtime_s": realtime_s,
        "stdout": upload.json()["text"],
    }


def door(name: str, model: Path, clip: Path) -> dict:
    if name == "load":
        return run(["load", str(model)])
    if name == "transcribe":
        return run(["transcribe", str(clip), "--model", str(model)])
    if name == "live":
        return run(["live", "--model", str(model), "--input", str(clip), "--fast"])
    if name == "serve":
        return serve(model, clip)
    figures = run(["bench", "--model", str(model), "--audio", str(clip), "--json"])
    return {**figures, "bench": json.loads(figures["stdout"])}


# --- the steps ---


def kernels(rounds: int = 3) -> None:
    """One decoder FFN product (9216 x 3072) for 1 row (a decoding step) and 39 (the
    prompt) in bf16, fp32 and 4 bits with bf16 or fp32 scales: the precisions alternate,
    best of `rounds`."""
    import mlx.core as mx

    w = mx.random.normal((9216, 3072), key=mx.random.key(0)) / 3072**0.5
    forms = {}
    for dtype in (mx.bfloat16, mx.float32):
        dense = w.astype(dtype)
        q, scales, biases = mx.quantize(dense, 64, 4)
        name = str(dtype).split(".")[-1]
        forms[name] = (dense, lambda x, d=dense: x @ d.T)
        forms[f"4-bit, {name} scales"] = (
            dense,
            lambda x, q=q, s=scales, b=biases: mx.quantized_matmul(x, q, s, b, bits=4),
        )
        mx.eval(dense, q, scales, biases)
    for rows in (1, 39):
        best = dict.fromkeys(forms, float("inf"))
        for _ in range(rounds):
            for name, (dense, product) in forms.items():
                x = mx.ones((rows, 3072), dense.dtype)
                mx.eval(product(x))  # warm
                tic = time.perf_counter()
                mx.eval(product(x))
                best[name] = min(best[name], time.perf_counter() - tic)
        cells = ", ".join(f"{name} {1000 * t:.1f} ms" for name, t in best.items())
        print(f"{rows:>2} row(s) x 9216 x 3072: {cells}")


def write_checkpoint(folder: Path, size: str) -> dict:
    """The random bf16 checkpoint in the official layout, in a child process."""
    tic = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--write", str(folder), size])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("writing the checkpoint failed")
    return {"wall_s": time.perf_counter() - tic, "rss_peak": usage.ru_maxrss * 1024}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def make_clip(path: Path, seconds: float) -> Path:
    """The first `seconds` of jfk.wav (speech)."""
    audio, rate = sf.read(shared_audio("jfk.wav"), dtype="int16")
    sf.write(path, audio[: int(seconds * rate)], rate)
    return path


def size(n: int) -> str:
    return f"{n / GB:.2f} GB" if abs(n) >= GB / 10 else f"{n / 10**6:.1f} MB"


def expected(fig: dict) -> str:
    """Memory the shapes call for (weights + one stream's caches at their most) against the
    measured peaks."""
    if "weights" not in fig:
        return ""
    weights = fig["weights"]
    mlx_peak = max(fig["mlx_peak_load"], fig["mlx_peak_end"])
    return (
        f"weights {size(weights)} + one stream's caches at most {size(fig['stream_bytes'])}; "
        f"MLX peak {size(mlx_peak)} (weights + {size(mlx_peak - weights)}), process peak "
        f"{size(fig['rss_peak'])} (at start {size(fig['rss_start'])})"
    )


def report(results: dict) -> None:
    for key, fig in results.items():
        if key == "checkpoint":
            print(f"checkpoint written: {fig['wall_s']:.0f} s, peak {size(fig['rss_peak'])}")
            continue
        model, name = key.split(":")
        line = f"{model:>6} {name:<10} wall {fig['wall_s']:7.1f} s"
        if name == "convert":
            source, rss, mlx_peak = fig["source_bytes"], fig["rss_peak"], fig["mlx_peak_end"]
            print(
                f"{line}, process peak {size(rss)} = {rss / source:.2f}x the source "
                f"({size(source)}; MLX peak {size(mlx_peak)} = {mlx_peak / source:.2f}x) "
                f"-> {size(fig['output_bytes'])}"
            )
            continue
        print(f"{line}, load {fig['load_s']:6.1f} s; {expected(fig)}")
        if name == "serve":
            print(
                f"{'':>18}upload {fig['upload_s']:.1f} s, "
                f"realtime session {fig['realtime_s']:.1f} s"
            )
        if name == "bench":
            b = fig["bench"]
            print(
                f"{'':>18}{b['tokens_per_second']:.2f} tokens/s, first token "
                f"{b['first_token_latency_ms']:.0f} ms + {b['delay_ms']} ms delay, prefill "
                f"{b['decoder_prefill_ms']:.0f} ms, decoder step {b['decoder_ms_per_step']:.0f} "
                f"ms, encoder {b['encoder_ms_per_step_batched']:.0f} ms/token, "
                f"RTF {b['real_time_factor']:.2f}, {b['audio_seconds']:.1f} s audio"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="where the checkpoints go")
    parser.add_argument("--kernels", action="store_true", help="time the matrix products only")
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument(
        "--models", nargs="+", default=["bf16", "q4"], choices=["bf16", *CONVERSIONS]
    )
    parser.add_argument("--commands", nargs="+", default=COMMANDS, choices=COMMANDS)
    parser.add_argument("--clip-seconds", type=float, default=1.0, help="of jfk.wav")
    parser.add_argument("--json", type=Path, help="add the figures to this file")
    a = parser.parse_args()
    if a.kernels:
        return kernels()
    if a.dir is None:
        parser.error("--dir is required")
    a.dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(a.json.read_text()) if a.json and a.json.is_file() else {}

    def keep(key: str, figures: dict) -> None:
        results[key] = {**figures, "machine": platform.node(), "when": time.ctime()}
        if a.json:
            a.json.write_text(json.dumps(results, indent=1))

    if not (a.dir / "bf16" / "consolidated.safetensors").is_file():
        keep("checkpoint", write_checkpoint(a.dir / "bf16", a.size))
    clip = make_clip(a.dir / f"clip-{a.clip_seconds:g}s.wav", a.clip_seconds)
    for model in a.models:
        folder = a.dir / model
        if model in CONVERSIONS and not folder.is_dir():
            source, options = a.dir / CONVERSIONS[model][0], CONVERSIONS[model][1]
            if not source.is_dir():
                parser.error(f"{model} is converted from {source.name}: convert that first")
            argv = ["convert", "--hf-path", str(source), "--mlx-path", str(folder)]
            figures = run(argv + options)
            figures.update(source_bytes=folder_bytes(source), output_bytes=folder_bytes(folder))
            keep(f"{model}:convert", figures)
        for name in a.commands:
            keep(f"{model}:{name}", door(name, folder, clip))
    report(results)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe(Path(sys.argv[2]), sys.argv[4:])
    elif sys.argv[1:2] == ["--write"]:
        write_random_official(Path(sys.argv[2]), params_json(SIZES[sys.argv[3]]))
    else:
        main()
