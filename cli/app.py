"""The `voxtral` command. The only place that touches the terminal; heavy imports happen
inside commands so `voxtral --help` stays instant."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="voxtral",
    help="Streaming speech-to-text with Voxtral Mini 4B Realtime on MLX.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

DEFAULT_MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
DELAYS = (*range(80, 1201, 80), 2400)
VALID_DELAYS = ", ".join(str(d) for d in DELAYS) + " ms"


def parse_delay(value: str | int) -> int:
    """`480`, `480ms` and `0.48s` all mean 480 ms."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", str(value))
    ms = float(match.group(1)) * (1000 if match.group(2) == "s" else 1) if match else None
    if ms is None or round(ms, 6) not in DELAYS:
        raise typer.BadParameter(
            f"{value!r} is not a supported delay; valid delays: {VALID_DELAYS}"
        )
    return int(round(ms))


ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Hugging Face repo id or local model directory."),
]
DelayOpt = Annotated[
    int,
    typer.Option(
        "--delay",
        "-d",
        parser=parse_delay,
        metavar="DELAY",
        help="Transcription delay: a multiple of 80 ms up to 1200, or 2400 (480, 480ms, 0.48s).",
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", help="Use only the Hugging Face cache; never download."),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", help="Use a remote server speaking the realtime protocol (ours or vLLM)."
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="VOXTRAL_API_KEY", help="Bearer token for the server."),
]
WordsOpt = Annotated[
    bool,
    typer.Option("--word-timestamps", help="One subtitle cue per word in srt/vtt output."),
]


def print_error(message: str) -> None:
    """One red line on stderr, never wrapped (VOXTRAL_DEBUG=1 re-raises for the traceback)."""
    if os.environ.get("VOXTRAL_DEBUG") and sys.exc_info()[0] is not None:
        raise
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True
    )


def fail(message: str) -> None:
    """print_error, then exit code 1."""
    print_error(message)
    raise typer.Exit(1)


def load_model(model: str, offline: bool):
    if offline:  # before huggingface_hub reads its environment
        os.environ["HF_HUB_OFFLINE"] = "1"
    import voxtral_mlx

    with status_spinner(f"loading {model}"):
        return voxtral_mlx.load(model, offline=offline or None)


def status_spinner(message: str):
    from contextlib import nullcontext

    from rich.console import Console

    console = Console(stderr=True)
    return console.status(message) if console.is_terminal else nullcontext()


@app.command()
def transcribe(
    files: Annotated[list[str], typer.Argument(help="Audio files; - reads one from stdin.")],
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = 480,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format", "-f", help="txt, srt, vtt, json or all (written to files)."
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Where to write the files (default .)."),
    ] = None,
    word_timestamps: WordsOpt = False,
    offline: OfflineOpt = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Transcribe audio files. Prints the text, or writes NAME.FORMAT files with -f / -o."""
    from voxtral_mlx import VoxtralError

    from .batch import read_input, transcribe_files

    formats = _formats(output_format)
    if formats is None and output_dir is not None:
        formats = ["txt"]
    try:
        if server:
            from .remote import transcribe_remote

            def engine(name, progress):
                label = "stdin.wav" if name == "-" else Path(name).name
                audio = read_input(name, remote=True)
                return transcribe_remote(server, audio, label, api_key, delay)
        else:
            loaded = load_model(model, offline)  # a bad --model fails before the heavy imports

            from voxtral_mlx import transcribe as run

            def engine(name, progress):
                return run(loaded, read_input(name), delay_ms=delay, progress=progress)

        failures = transcribe_files(
            engine, files, formats, output_dir or Path("."), word_timestamps
        )
    except VoxtralError as e:
        fail(str(e))
    if failures:
        raise typer.Exit(1)


def _formats(value: str | None) -> list[str] | None:
    from voxtral_mlx.formats import FORMATS

    if value is None:
        return None
    if value == "all":
        return list(FORMATS)
    if value not in FORMATS:
        raise typer.BadParameter(
            f"{value!r}: choose one of {', '.join(FORMATS)} or all", param_hint="-f"
        )
    return [value]


@app.command()
def live(
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = 480,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="Input device: an index or part of its name (see `voxtral devices`)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the transcript while listening: .txt, .srt, .vtt or .jsonl.",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Replay an audio file through the capture path instead of a microphone.",
        ),
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="With --input: replay as fast as it can be processed.")
    ] = False,
    word_timestamps: WordsOpt = False,
    offline: OfflineOpt = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Transcribe the microphone as you speak; Ctrl+C flushes the last words and stops."""
    from voxtral_mlx.formats import LIVE_FORMATS

    if fast and input_file is None:
        fail("--fast only applies to --input FILE")
    if output is not None and output.suffix.lstrip(".").lower() not in LIVE_FORMATS:
        fail(f"cannot write {output.name}: --output must end in .txt, .srt, .vtt or .jsonl")

    from rich.console import Console

    from voxtral_mlx import VoxtralError

    from .capture import FileSource, MicrophoneSource, find_device
    from .live import run_live

    try:
        # open the input first: a missing microphone should not wait for the model
        source = (
            FileSource(input_file, fast) if input_file else MicrophoneSource(find_device(device))
        )
        if server:
            from .remote import RemoteSession

            # the default model name means "whatever the server serves"
            session = RemoteSession(
                server, None if model == DEFAULT_MODEL else model, api_key, delay
            )
        else:
            from voxtral_mlx import Session

            session = Session(load_model(model, offline), delay)
        run_live(session, source, delay, output, Console(), word_timestamps)
    except VoxtralError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}" if output else str(e))


@app.command()
def serve(
    model: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    delay: DelayOpt = 480,
    api_key: ApiKeyOpt = None,
    max_sessions: Annotated[
        int, typer.Option("--max-sessions", help="Concurrent realtime sessions.")
    ] = 8,
    max_message_mb: Annotated[
        float, typer.Option("--max-message-mb", help="Largest WebSocket message accepted.")
    ] = 4.0,
    max_backlog: Annotated[
        float,
        typer.Option("--max-backlog", help="Seconds of unprocessed audio a session may queue."),
    ] = 30.0,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow browser pages from this origin."),
    ] = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the live transcription page in the browser.")
    ] = False,
    offline: OfflineOpt = False,
) -> None:
    """Serve the live page (/), the realtime API (/v1/realtime, vLLM-compatible) and uploads."""
    from rich.console import Console

    from voxtral_mlx import VoxtralError
    from voxtral_mlx.server import ServerConfig
    from voxtral_mlx.server import serve as run

    if not 1 <= port <= 65535:
        fail(f"--port {port}: choose 1-65535")
    try:
        loaded = load_model(model, offline)
    except VoxtralError as e:
        fail(str(e))
    config = ServerConfig(
        model_name=model,
        delay_ms=delay,
        api_key=api_key,
        max_sessions=max_sessions,
        max_message_bytes=int(max_message_mb * 2**20),
        max_backlog_seconds=max_backlog,
        cors_origins=tuple(cors_origin or ()),
    )
    err = Console(stderr=True)

    def ready(server) -> None:
        if open_page:
            import webbrowser

            webbrowser.open(f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/")
        auth = "api key required" if api_key else "no api key"
        err.print(
            f"serving {model} on http://{host}:{port} (ws://{host}:{port}/v1/realtime, {auth})",
            highlight=False,
            soft_wrap=True,
        )

    try:
        run(loaded, config, host, port, ready=ready)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror}")


@app.command(name="eval")
def evaluate(
    paths: Annotated[
        list[Path], typer.Argument(help="Audio files or folders with NAME.txt references.")
    ],
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = 480,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print per-file and overall scores as JSON.")
    ] = False,
    offline: OfflineOpt = False,
    normalizer: Annotated[
        str,
        typer.Option(
            "--normalizer",
            metavar="NAME",
            help="Text normalization before scoring: whisper (Whisper's English normalizer, as "
            "in published figures) or basic (numbers spelled out).",
        ),
    ] = "whisper",
) -> None:
    """Word and character error rates (normalized text) over audio with reference transcripts."""
    import json

    from rich.console import Console
    from rich.table import Table

    from voxtral_mlx import VoxtralError
    from voxtral_mlx.evaluation import NORMALIZERS, check_normalizer, find_pairs
    from voxtral_mlx.evaluation import evaluate as run

    try:
        check_normalizer(normalizer)
    except VoxtralError as e:
        print_error(str(e))
        raise typer.Exit(2) from None
    try:
        pairs = find_pairs(paths)
        loaded = load_model(model, offline)
        with status_spinner(f"transcribing {len(pairs)} files"):
            report = run(loaded, pairs, delay, normalizer)
    except VoxtralError as e:
        fail(str(e))
    if as_json:
        files = [
            {
                "audio": f.audio,
                "wer": f.wer,
                "cer": f.cer,
                "words": f.words,
                "reference": f.reference,
                "hypothesis": f.hypothesis,
            }
            for f in report.files
        ]
        print(
            json.dumps(
                {
                    "model": model,
                    "delay_ms": delay,
                    "normalizer": report.normalizer,
                    "files": files,
                    "wer": report.wer,
                    "cer": report.cer,
                    "audio_seconds": report.audio_seconds,
                    "real_time_factor": report.elapsed_seconds / max(report.audio_seconds, 1e-9),
                },
                indent=2,
            )
        )
        return
    table = Table("file", "WER", "CER", "hypothesis", box=None)
    for f in report.files:
        table.add_row(
            Path(f.audio).name, f"{100 * f.wer:.1f}%", f"{100 * f.cer:.1f}%", f.hypothesis[:60]
        )
    console = Console()
    console.print(table)
    console.print(
        f"overall: WER {100 * report.wer:.2f}%  CER {100 * report.cer:.2f}%  over "
        f"{len(report.files)} files, {report.audio_seconds:.1f} s of audio, delay {delay} ms, "
        f"normalizer {report.normalizer} ({NORMALIZERS[report.normalizer]})",
        highlight=False,
    )


@app.command()
def devices() -> None:
    """List the audio input devices (index, name, channels, default rate)."""
    from rich.console import Console
    from rich.table import Table

    from voxtral_mlx import VoxtralError

    from .capture import input_devices

    try:
        found = input_devices()
    except VoxtralError as e:
        fail(str(e))
    table = Table("", "index", "name", "channels", "rate", box=None)
    for d in found:
        table.add_row(
            "*" if d.is_default else "", str(d.index), d.name, str(d.channels), f"{d.rate} Hz"
        )
    Console().print(table)


@app.command()
def download(
    repo: Annotated[str, typer.Argument(help="Hugging Face repo id.")] = DEFAULT_MODEL,
) -> None:
    """Download a model into the Hugging Face cache (for offline use later)."""
    from voxtral_mlx import VoxtralError
    from voxtral_mlx.loader import resolve_model_path

    try:
        path = resolve_model_path(repo, offline=False)
    except VoxtralError as e:
        fail(str(e))
    print(path)


@app.command()
def convert(
    hf_path: Annotated[
        str, typer.Option("--hf-path", help="Source: repo id or directory, any layout.")
    ],
    mlx_path: Annotated[
        Path, typer.Option("--mlx-path", help="Where to write the MLX checkpoint.")
    ],
    quantize: Annotated[
        bool, typer.Option("--quantize", "-q", help="Quantize linear layers and the embedding.")
    ] = False,
    q_bits: Annotated[int, typer.Option("--q-bits", help="Bits per weight: 4, 6 or 8.")] = 4,
    q_group_size: Annotated[
        int, typer.Option("--q-group-size", help="Group size: 32, 64 or 128.")
    ] = 64,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="float16, bfloat16 or float32 for the float weights."),
    ] = None,
    offline: OfflineOpt = False,
) -> None:
    """Write an MLX checkpoint (optionally quantized) that `voxtral_mlx.load` reads."""
    import mlx.core as mx

    from voxtral_mlx import VoxtralError
    from voxtral_mlx.convert import convert as run

    dtypes = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
    if dtype is not None and dtype not in dtypes:
        fail(f"--dtype {dtype!r}: choose float16, bfloat16 or float32")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with status_spinner("converting"):
            out = run(
                hf_path,
                mlx_path,
                bits=q_bits if quantize else None,
                group_size=q_group_size,
                dtype=dtypes.get(dtype),
                offline=offline or None,
            )
    except VoxtralError as e:
        fail(str(e))
    print(out)


@app.command()
def bench(
    model: ModelOpt = DEFAULT_MODEL,
    random_weights: Annotated[
        bool,
        typer.Option(
            "--random-weights", help="The real architecture with random weights: no download."
        ),
    ] = False,
    size: Annotated[
        str,
        typer.Option("--size", help="With --random-weights: full (4.4 B) or small (any machine)."),
    ] = "full",
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="float16, bfloat16 or float32 (default: the model's)."),
    ] = None,
    q_bits: Annotated[
        int | None, typer.Option("--q-bits", help="Quantize to 4, 6 or 8 bits first.")
    ] = None,
    q_group_size: Annotated[
        int, typer.Option("--q-group-size", help="Group size: 32, 64 or 128.")
    ] = 64,
    delay: DelayOpt = 480,
    audio: Annotated[
        Path | None,
        typer.Option("--audio", help="Speech to run on (default: the bundled 11 s clip)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    offline: OfflineOpt = False,
) -> None:
    """Time every stage end to end on real speech: mel, encoder, decoder, real-time factor."""
    import json

    import mlx.core as mx

    from voxtral_mlx import VoxtralError, load_audio
    from voxtral_mlx import bench as b
    from voxtral_mlx.convert import quantize

    dtypes = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
    if dtype is not None and dtype not in dtypes:
        fail(f"--dtype {dtype!r}: choose float16, bfloat16 or float32")
    if size not in b.SIZES:
        fail(f"--size {size!r}: choose {' or '.join(b.SIZES)}")
    try:
        speech = load_audio(audio or b.BUNDLED_SPEECH)
        with status_spinner("preparing the model"):
            if random_weights:
                loaded = b.random_model(size, dtypes.get(dtype, mx.bfloat16))
            else:
                loaded = load_model(model, offline)
                if dtype is not None:
                    loaded.set_dtype(dtypes[dtype])  # keeps load's memory layout
            if q_bits is not None:
                quantize(loaded, q_bits, q_group_size)
        with status_spinner("measuring"):
            result = b.run(loaded, speech, delay)
    except VoxtralError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    _print_bench(result, "random weights, " + size if random_weights else model)


def _print_bench(r, label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"voxtral bench: {label}", box=None, title_justify="left")
    table.add_column("stage")
    table.add_column("figure", justify="right")
    rows = [
        ("mel", f"{r.mel_ms_per_step:.3f} ms / 80 ms step"),
        ("encoder, streamed", f"{r.encoder_ms_per_step_streamed:.2f} ms / step"),
        ("encoder, batched", f"{r.encoder_ms_per_step_batched:.2f} ms / step"),
        ("decoder prefill", f"{r.decoder_prefill_ms:.1f} ms"),
        ("decoder", f"{r.decoder_ms_per_step:.2f} ms / step"),
        ("end to end", f"{r.tokens_per_second:.1f} tokens/s, RTF {r.real_time_factor:.3f}"),
        ("first token (live)", f"{r.first_token_latency_ms:.0f} ms + {r.delay_ms} ms delay"),
        ("peak memory", f"{r.peak_memory_gb:.2f} GB"),
    ]
    for stage, figure in rows:
        table.add_row(stage, figure)
    console = Console()
    console.print(table)
    console.print(
        f"{r.audio_seconds:.1f} s of audio, {r.dtype}, quantization {r.quantization}; "
        f"{r.chip}, {r.os}, MLX {r.mlx_version} ({r.backend})",
        highlight=False,
    )


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"voxtral-mlx {version('voxtral-mlx')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Streaming speech-to-text with Voxtral Mini 4B Realtime on MLX."""


def main() -> None:
    app(prog_name="voxtral")


if __name__ == "__main__":
    sys.exit(main())
