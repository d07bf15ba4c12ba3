"""The `voxtral` command. The only place that touches the terminal.

Every command checks its options and inputs before it imports the model code (MLX, mlx-lm)
or loads a model, so a typo is reported at once; `voxtral --help` stays instant.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from voxtral_mlx.biasing import CONTINUATION, DEFAULT_STRENGTH, MAX_WEIGHT
from voxtral_mlx.config import DEFAULT_DELAY_MS, DEFAULT_MODEL
from voxtral_mlx.errors import VoxtralError, VoxtralWarning

from .ui import USAGE_EXIT, bad_usage, fail, print_error, status_spinner


class _OurMetavars:
    """Recent Typer prints a type beside every parameter in --help (`<bool>` on flags,
    `<list[str]>`): show the metavar each option is given here instead, and nothing beside
    a flag or an argument (its name is its metavar)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            shown = param.metavar if param.param_type_name == "option" else None
            param.display_type_rich = lambda ctx, shown=shown: shown
        return params


class Command(_OurMetavars, TyperCommand):
    pass


class Group(_OurMetavars, TyperGroup):
    pass


app = typer.Typer(
    name="voxtral",
    cls=Group,
    help="Streaming speech-to-text with Voxtral Mini 4B Realtime on MLX.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
command = app.command  # every command: app.command(cls=Command)

DTYPES = ("float16", "bfloat16", "float32")


def delay_option(value: str | None) -> int | None:
    """`480`, `480ms` and `0.48s` all mean 480 ms; None: the model's own delay."""
    from voxtral_mlx.config import parse_delay

    if value is None:
        return None
    try:
        return parse_delay(value)
    except VoxtralError as e:
        raise typer.BadParameter(str(e)) from None


def server_option(value: str | None) -> str | None:
    """A server's address: ws://, wss://, http:// or https:// and a host (checked once,
    as a command-line error, not once per file)."""
    from urllib.parse import urlparse

    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("ws", "wss", "http", "https") or not parsed.hostname:
        raise typer.BadParameter(f"{value!r}: use http://HOST:PORT or ws://HOST:PORT")
    return value


def flag(*names: str, help: str):
    return typer.Option(*names, help=help)


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", metavar="REPO|DIR", help="Hugging Face repo id or local model directory."
    ),
]
DelayOpt = Annotated[
    int | None,
    typer.Option(
        "--delay",
        "-d",
        parser=delay_option,
        metavar="DELAY",
        show_default=False,
        help="Transcription delay: a multiple of 80 ms up to 1200, or 2400 (480, 480ms, "
        f"0.48s). Default: the model's own ({DEFAULT_DELAY_MS} ms for {DEFAULT_MODEL}).",
    ),
]
OfflineOpt = Annotated[
    bool, flag("--offline", help="Use only the Hugging Face cache; never download.")
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        parser=server_option,
        help="Use a remote server: voxtral serve, vLLM, or Mistral's API (--protocol), at its "
        "own delay unless --delay is given; a vLLM server ignores --delay and sends no times "
        "(no srt or vtt).",
    ),
]
ProtocolOpt = Annotated[
    str,
    typer.Option(
        "--protocol",
        metavar="NAME",
        help="The --server's API: vllm (as voxtral serve and vLLM speak it: /v1/realtime live, "
        "/v1/audio/transcriptions for files), "
        "mistral (Mistral's, as voxtral serve and api.mistral.ai speak it), or auto: mistral "
        "for a URL whose path is /v1/audio/transcriptions or /v1/audio/transcriptions/realtime "
        "or whose host is mistral.ai, else vllm.",
    ),
]
ClientKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        show_default=False,
        help="Bearer token for the --server. Default: $VOXTRAL_API_KEY; for Mistral's API, "
        "$MISTRAL_API_KEY, else $VOXTRAL_API_KEY.",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key", metavar="KEY", envvar="VOXTRAL_API_KEY", help="Bearer token for the server."
    ),
]
WordsOpt = Annotated[
    bool, flag("--word-timestamps", help="One subtitle cue per word in srt/vtt output.")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", metavar="DTYPE", help="float16, bfloat16 or float32."),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        metavar="NAME|INDEX",
        help="Input device: an index or part of its name (see `voxtral devices`).",
    ),
]
InputOpt = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        metavar="FILE",
        help="Replay an audio file through the capture path instead of a microphone.",
    ),
]
FastOpt = Annotated[
    bool, flag("--fast", help="With --input: replay as fast as it can be processed.")
]
OverwriteOpt = Annotated[
    bool, flag("--overwrite", help="Replace output files that exist (refused otherwise).")
]
CONTEXT_BIAS_HELP = (
    "Custom vocabulary: names or terms to prefer, comma-separated; repeatable "
    '(--context-bias "Voxtral, MLX, Kubernetes"). Where the model writes a word, a listed '
    "one it nearly chose wins; no word is added where the model hears none."
)
STRENGTH_HELP = (
    f"The weight of listed phrases given without one: the logit bonus of a phrase's first "
    f"token ({CONTINUATION:g}x for the tokens that continue it), above 0 and at most "
    f"{MAX_WEIGHT:g}; more finds more listed words and writes more where others were said. "
    f"Default: {DEFAULT_STRENGTH:g}."
)
ContextBiasOpt = Annotated[
    list[str] | None,
    typer.Option("--context-bias", metavar="PHRASES", help=CONTEXT_BIAS_HELP),
]
ServeContextBiasOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--context-bias",
        metavar="PHRASES",
        help=CONTEXT_BIAS_HELP
        + " The list of every request and session that sends none of its own.",
    ),
]
ContextBiasFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--context-bias-file",
        metavar="FILE",
        help="Custom vocabulary from a file: a phrase per line, optionally a tab and its weight.",
    ),
]
ContextBiasStrengthOpt = Annotated[
    float | None,
    typer.Option(
        "--context-bias-strength", metavar="WEIGHT", show_default=False, help=STRENGTH_HELP
    ),
]
ServeContextBiasStrengthOpt = Annotated[
    float | None,
    typer.Option(
        "--context-bias-strength",
        metavar="WEIGHT",
        show_default=False,
        help=STRENGTH_HELP + " Also weighs the phrases clients send without weights.",
    ),
]


def load_model(model: str, offline: bool):
    if offline:  # before huggingface_hub reads its environment
        os.environ["HF_HUB_OFFLINE"] = "1"
    import voxtral_mlx
    from voxtral_mlx.errors import ModelUnavailable
    from voxtral_mlx.memory import settle_memory

    try:
        with status_spinner(f"loading {model}"):
            loaded = voxtral_mlx.load(model, offline=offline or None)
    except ModelUnavailable as e:  # a local directory would help: say how to give one
        raise VoxtralError(f"{e} (--model DIR)") from e
    settle_memory(loaded)  # the process holds the model until it exits
    return loaded


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was given (on the command line or by its environment
    variable), rather than left at its default."""
    source = ctx.get_parameter_source(name)  # Click's enum (typer vendors Click: by name)
    return source is not None and source.name != "DEFAULT"


def context_bias_list(
    phrases: list[str] | None, file: Path | None, strength: float | None, serve: bool = False
) -> list[tuple[str, float]] | None:
    """The list of --context-bias (each comma-separated) and --context-bias-file, checked
    before the model loads: a bad one is a usage error (exit 2). None: no list. (`serve`:
    the strength also weighs the lists clients send, so it needs no list of its own.)"""
    from voxtral_mlx.biasing import check_weight, parse_context_bias, read_context_bias_file

    if strength is not None and not phrases and file is None and not serve:
        bad_usage("--context-bias-strength needs --context-bias or --context-bias-file")
    weight = DEFAULT_STRENGTH if strength is None else strength
    try:
        check_weight(weight, "--context-bias-strength")
        items = []
        for value in phrases or []:
            if not (listed := parse_context_bias(value, weight)):
                raise VoxtralError(f"--context-bias {value!r} lists no phrase")
            items += listed
        if file is not None:
            if not (listed := read_context_bias_file(file, weight)):
                raise VoxtralError(f"{file} lists no phrase (a phrase per line)")
            items += listed
        return parse_context_bias(items) or None
    except VoxtralError as e:
        bad_usage(str(e))


def check_choice(value: str | None, choices: tuple, option: str) -> None:
    if value is not None and value not in choices:
        bad_usage(f"{option} {value!r}: choose {', '.join(map(str, choices))}")


@command(cls=Command)
def transcribe(
    files: Annotated[
        list[str], typer.Argument(metavar="FILES", help="Audio files; - reads one from stdin.")
    ],
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format",
            "-f",
            metavar="FORMAT",
            help="txt, srt, vtt, json or all (written to files).",
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", "-o", metavar="DIR", help="Where to write the files (default .)."
        ),
    ] = None,
    word_timestamps: WordsOpt = False,
    overwrite: OverwriteOpt = False,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            metavar="N",
            show_default=False,
            help="Files decoded together, one weight read per step for all of them. Default: "
            "up to 8, as many as half the memory the weights leave free holds (each file's "
            "caches: up to 1.17 GB for the bf16 model).",
        ),
    ] = None,
    context_bias: ContextBiasOpt = None,
    context_bias_file: ContextBiasFileOpt = None,
    context_bias_strength: ContextBiasStrengthOpt = None,
    offline: OfflineOpt = False,
    server: ServerOpt = None,
    protocol: ProtocolOpt = "auto",
    api_key: ClientKeyOpt = None,
) -> None:
    """Transcribe audio files. Prints the text, or writes NAME.FORMAT files with -f / -o."""
    from voxtral_mlx.formats import FORMATS

    from .batch import Batch

    vocabulary = context_bias_list(context_bias, context_bias_file, context_bias_strength)
    formats = None
    if output_format is not None:
        check_choice(output_format, (*FORMATS, "all"), "-f")
        formats = list(FORMATS) if output_format == "all" else [output_format]
    elif output_dir is not None:
        formats = ["txt"]
    if batch is not None and batch < 1:
        bad_usage(f"--batch {batch}: at least 1")
    if batch is not None and server:
        bad_usage("--batch applies to local transcription (the server batches its own)")
    check_protocol(protocol, server)
    if word_timestamps and not {"srt", "vtt"} & set(formats or []):
        bad_usage("--word-timestamps applies to srt and vtt output (-f srt, -f vtt, -f all)")
    work = Batch(files, formats, output_dir or Path("."), word_timestamps, overwrite)
    try:
        work.check()  # inputs and the output folder, before any model is loaded
        if server:
            from .remote import server_key, server_protocol, transcribe_remote
            from .remote_mistral import transcribe_mistral

            kind = server_protocol(server, protocol)
            key = server_key(api_key, kind)
            asked = None if model == DEFAULT_MODEL else model

            def engine(name, audio, progress):
                label = "stdin.wav" if name == "-" else Path(name).name
                if kind == "mistral":
                    result = transcribe_mistral(server, audio, label, key, delay, asked, vocabulary)
                else:
                    result = transcribe_remote(server, audio, label, key, delay, vocabulary)
                if result.text and not result.words and {"srt", "vtt"} & set(formats or ()):
                    raise VoxtralError(
                        "the server sent no word times (as vLLM's, for this model): srt and "
                        "vtt cannot be written; use -f txt or json"
                    )
                return result

            work.run(engine, remote=True)
        else:
            loaded = load_model(model, offline)
            from voxtral_mlx import transcribe as run
            from voxtral_mlx.session import streams_that_fit

            size = batch or min(8, streams_that_fit(loaded))
            if size > 1 and len(work.files) > 1:
                work.run_pooled(loaded, delay, size, vocabulary)
            else:

                def engine(name, audio, progress):
                    return run(
                        loaded, audio, delay_ms=delay, progress=progress, context_bias=vocabulary
                    )

                work.run(engine)
    except VoxtralError as e:
        fail(str(e))
    if work.failures:
        raise typer.Exit(1)


def check_protocol(protocol: str, server: str | None) -> None:
    from .remote import PROTOCOLS

    check_choice(protocol, PROTOCOLS, "--protocol")
    if protocol != "auto" and not server:
        bad_usage("--protocol applies to --server")


def check_capture(
    device: str | None,
    input_file: Path | None,
    fast: bool,
    options: tuple[str, str] = ("--device", "--input"),
) -> None:
    if fast and input_file is None:
        bad_usage(f"--fast only applies to {options[1]} FILE")
    if device is not None and input_file is not None:
        bad_usage(f"{options[0]} and {options[1]} exclude each other")


def source_opener(device: str | None, input_file: Path | None, fast: bool):
    """Checks the input now, before the model loads; returns what opens it once it has."""
    from .capture import FileSource, MicrophoneSource, find_device

    if input_file is not None:
        from voxtral_mlx.audio import check_finite, decode_audio

        from .ui import about

        try:
            decoded = decode_audio(input_file)
            check_finite(*decoded)
        except VoxtralError as e:  # named as transcribe names it
            raise VoxtralError(about(str(input_file), str(e))) from None
        return lambda: FileSource(input_file, decoded, fast)
    found = find_device(device)
    return lambda: MicrophoneSource(found)


@command(cls=Command)
def live(
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = None,
    device: DeviceOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Also write the transcript while listening: .txt, .srt, .vtt or .jsonl.",
        ),
    ] = None,
    input_file: InputOpt = None,
    fast: FastOpt = False,
    word_timestamps: WordsOpt = False,
    overwrite: OverwriteOpt = False,
    context_bias: ContextBiasOpt = None,
    context_bias_file: ContextBiasFileOpt = None,
    context_bias_strength: ContextBiasStrengthOpt = None,
    offline: OfflineOpt = False,
    server: ServerOpt = None,
    protocol: ProtocolOpt = "auto",
    api_key: ClientKeyOpt = None,
) -> None:
    """Transcribe the microphone as you speak; Ctrl+C flushes the last words and stops."""
    from voxtral_mlx.formats import LIVE_FORMATS

    from .files import check_not_replaced, check_writable

    check_capture(device, input_file, fast)
    check_protocol(protocol, server)
    vocabulary = context_bias_list(context_bias, context_bias_file, context_bias_strength)
    if output is not None and output.suffix.lstrip(".").lower() not in LIVE_FORMATS:
        bad_usage(f"cannot write {output.name}: --output must end in .txt, .srt, .vtt or .jsonl")

    try:
        open_source = source_opener(device, input_file, fast)
        if output is not None:
            check_writable(output)
            check_not_replaced([output], overwrite)
        if server:
            from .remote import RemoteSession, server_key, server_protocol
            from .remote_mistral import MistralSession

            kind = server_protocol(server, protocol)
            remote = MistralSession if kind == "mistral" else RemoteSession
            source = open_source()
            # the default model name means "whatever the server serves"
            session = remote(
                server,
                None if model == DEFAULT_MODEL else model,
                server_key(api_key, kind),
                delay,
                source.rate,
                context_bias=vocabulary,
            )
            subtitles = output is not None and output.suffix.lower() in (".srt", ".vtt")
            if subtitles and not session.timed:
                session.close()
                source.close()
                raise VoxtralError(
                    f"cannot write {output.name}: the server sends no times (it speaks only "
                    "vLLM's protocol); write .txt or .jsonl"
                )
        else:
            from voxtral_mlx import Session

            loaded = load_model(model, offline)
            source = open_source()
            session = Session(loaded, delay, sample_rate=source.rate, context_bias=vocabulary)
        from rich.console import Console

        from .live import run_live

        run_live(session, source, output, Console(), word_timestamps)
    except VoxtralError as e:
        fail(str(e))
    except BrokenPipeError:
        raise  # the reader of stdout left (| head): Typer ends quietly, exit code 1
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}" if output else str(e))


@command(cls=Command)
def meeting(
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = None,
    device: DeviceOpt = None,
    system_device: Annotated[
        str | None,
        typer.Option(
            "--system-device",
            metavar="NAME|INDEX",
            help="Take the computer's output from this loopback input device (BlackHole...) "
            "instead of the system's own capture (ScreenCaptureKit on macOS, the default "
            "output's monitor through PulseAudio or PipeWire on Linux).",
        ),
    ] = None,
    you: Annotated[
        str, typer.Option("--you", metavar="NAME", help="The name of the microphone's speaker.")
    ] = "You",
    others: Annotated[
        str,
        typer.Option(
            "--others", metavar="NAME", help="The name of the speakers the computer plays."
        ),
    ] = "Others",
    output: Annotated[
        list[Path] | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Also write the transcript while listening: .txt, .md, .srt, .vtt or .jsonl "
            "(repeat for several). Each is written beside its name and takes it once the "
            "meeting ends: whole, or not at all.",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="Replay an audio file as the microphone, through the capture path.",
        ),
    ] = None,
    system_input: Annotated[
        Path | None,
        typer.Option(
            "--system-input",
            metavar="FILE",
            help="Replay an audio file as the computer's output (the call).",
        ),
    ] = None,
    fast: Annotated[
        bool,
        flag(
            "--fast",
            help="With --input and --system-input: replay both as fast as they can be processed.",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    context_bias: ContextBiasOpt = None,
    context_bias_file: ContextBiasFileOpt = None,
    context_bias_strength: ContextBiasStrengthOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """You and the call (the computer's output), one transcript; Ctrl+C flushes both, stops."""
    vocabulary = context_bias_list(context_bias, context_bias_file, context_bias_strength)
    check_capture(device, input_file, False)
    check_capture(system_device, system_input, False, ("--system-device", "--system-input"))
    if fast and (input_file is None or system_input is None):
        bad_usage("--fast replays files: it needs --input and --system-input")
    names = _speaker_names(you, others)
    outputs = _meeting_outputs(output or [], overwrite)
    try:
        open_you = source_opener(device, input_file, fast)
        open_others = system_source_opener(system_device, system_input, fast)
        loaded = load_model(model, offline)
        from rich.console import Console

        from .meeting import open_streams, run_meeting

        sources = [open_you()]
        try:
            sources.append(open_others())
        except BaseException:
            sources[0].close()
            raise
        sides = list(zip(names, sources, strict=True))
        streams = open_streams(loaded, delay, sides, vocabulary)
        run_meeting(streams, outputs, Console())
    except VoxtralError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {e.filename}: {e.strerror}" if e.filename else str(e))


def system_source_opener(device: str | None, input_file: Path | None, fast: bool):
    """The computer's output (a file replayed, a loopback device or the system's own
    capture), checked now, before the model loads; returns what opens it."""
    if input_file is not None:
        return source_opener(None, input_file, fast)
    from .system_audio import system_audio

    return system_audio(device)


def _speaker_names(you: str, others: str) -> tuple[str, str]:
    names = (you.strip(), others.strip())
    for option, name in zip(("--you", "--others"), names, strict=True):
        if not name or "\n" in name or "\r" in name:
            bad_usage(f"{option}: give a name on one line")
    if names[0].casefold() == names[1].casefold():
        bad_usage(f"--you and --others are both {names[0]!r}: give two names")
    return names


def _meeting_outputs(paths: list[Path], overwrite: bool) -> list[Path]:
    """The -o files, checked before the model loads: formats, duplicates, their folders,
    files that would be replaced."""
    from voxtral_mlx.formats import MEETING_FORMATS

    from .files import check_not_replaced, check_writable

    seen = set()
    for path in paths:
        if path.suffix.lstrip(".").lower() not in MEETING_FORMATS:
            bad_usage(
                f"cannot write {path.name}: --output must end in .txt, .md, .srt, .vtt or .jsonl"
            )
        if path.resolve() in seen:
            bad_usage(f"--output {path} is given twice")
        seen.add(path.resolve())
    try:
        for path in paths:
            check_writable(path)
        check_not_replaced(paths, overwrite)
    except VoxtralError as e:
        fail(str(e))
    return paths


@command(cls=Command)
def dictate(
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = None,
    device: DeviceOpt = None,
    hotkey: Annotated[
        str | None,
        typer.Option(
            "--hotkey",
            metavar="KEYS",
            show_default=False,
            help="Pauses and resumes listening, e.g. ctrl+alt+space or <cmd>+<shift>+d. "
            "Default: ctrl+shift+space on macOS, ctrl+alt+space on Linux.",
        ),
    ] = None,
    hold: Annotated[
        bool, flag("--hold", help="Push-to-talk: listen only while the hotkey is held.")
    ] = False,
    paste: Annotated[
        bool,
        flag(
            "--paste",
            help="Type each phrase through the clipboard (its content is restored), for "
            "applications that drop synthetic keystrokes.",
        ),
    ] = False,
    commands: Annotated[
        bool, flag("--commands", help='Spoken "new line" and "new paragraph" make line breaks.')
    ] = False,
    cue: Annotated[
        bool,
        typer.Option(
            "--cue/--no-cue", help="A short sound when listening starts and when it stops."
        ),
    ] = True,
    dry_run: Annotated[
        bool, flag("--dry-run", help="Print what would be typed instead of typing it.")
    ] = False,
    input_file: InputOpt = None,
    fast: FastOpt = False,
    context_bias: ContextBiasOpt = None,
    context_bias_file: ContextBiasFileOpt = None,
    context_bias_strength: ContextBiasStrengthOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Type what you say into the focused application as you speak; Ctrl+C flushes, stops."""
    check_capture(device, input_file, fast)
    vocabulary = context_bias_list(context_bias, context_bias_file, context_bias_strength)
    from .keyboard import default_hotkey, open_keyboard, parse_hotkey

    try:
        key = parse_hotkey(default_hotkey() if hotkey is None else hotkey)
    except VoxtralError as e:
        bad_usage(str(e))
    try:
        keyboard = _dry_run_keyboard(key, hold) if dry_run else open_keyboard(key, paste)
        open_source = source_opener(device, input_file, fast)
        loaded = load_model(model, offline)
        from voxtral_mlx import Session

        from .dictate import DictateOptions, run_dictate

        source = open_source()
        session = Session(loaded, delay, sample_rate=source.rate, context_bias=vocabulary)
        options = DictateOptions(key, hold, paste, commands, cue, dry_run)
        run_dictate(session, source, keyboard, options)
    except VoxtralError as e:
        fail(str(e))


def _dry_run_keyboard(hotkey, hold: bool):
    """--dry-run types nothing, but listens for the hotkey where it can (with --hold it
    must: push to talk without the key would never listen)."""
    from .keyboard import open_keyboard

    try:
        return open_keyboard(hotkey)
    except VoxtralError as e:
        if hold:
            raise VoxtralError(f"--hold needs the hotkey: {e}") from e
        print_error(f"the hotkey is off: {e}", label="warning")
        return None


@command(cls=Command)
def serve(
    model: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str,
        typer.Option("--host", metavar="ADDRESS", help="Address to bind (loopback by default)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="TCP port.")] = 8000,
    delay: DelayOpt = None,
    api_key: ApiKeyOpt = None,
    max_sessions: Annotated[
        int | None,
        typer.Option(
            "--max-sessions",
            metavar="N",
            show_default=False,
            help="Concurrent realtime sessions. Default: as many as half the memory the "
            "weights leave free holds, each at its full window (about 1.17 GB per stream for "
            "the bf16 model), from 1 to 64.",
        ),
    ] = None,
    max_message_mb: Annotated[
        float,
        typer.Option("--max-message-mb", metavar="MB", help="Largest WebSocket message accepted."),
    ] = 4.0,
    max_backlog: Annotated[
        float,
        typer.Option(
            "--max-backlog",
            metavar="SECONDS",
            help="Seconds of unprocessed audio a session may queue.",
        ),
    ] = 30.0,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb",
            metavar="MB",
            help="Largest upload accepted; reading stops there (413).",
        ),
    ] = 200.0,
    idle_timeout: Annotated[
        float,
        typer.Option(
            "--idle-timeout",
            metavar="SECONDS",
            help="Close a realtime connection that sent no audio and no commit, and got no "
            "transcription event, for this long (its session slot is freed).",
        ),
    ] = 60.0,
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout",
            metavar="SECONDS",
            help="Close a connection that has not sent its request headers after this long; "
            "an upload whose body stalls this long gets 408.",
        ),
    ] = 20.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            metavar="N",
            show_default=False,
            help="Open connections at most; more are closed as they open. Default: what the "
            "open-file limit leaves room for, 16 to 1000.",
        ),
    ] = None,
    served_model_name: Annotated[
        str | None,
        typer.Option(
            "--served-model-name",
            metavar="NAME",
            show_default=False,
            help="The model's name in the API (/v1/models, session.update). Default: the "
            "repo id, or the local folder's name.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", metavar="ORIGIN", help="Allow browser pages from this origin."
        ),
    ] = None,
    open_page: Annotated[
        bool, flag("--open", help="Open the live transcription page in the browser.")
    ] = False,
    context_bias: ServeContextBiasOpt = None,
    context_bias_file: ContextBiasFileOpt = None,
    context_bias_strength: ServeContextBiasStrengthOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Serve the live page (/), the realtime API (/v1/realtime, vLLM-compatible) and uploads."""
    vocabulary = context_bias_list(
        context_bias, context_bias_file, context_bias_strength, serve=True
    )
    if not 1 <= port <= 65535:
        bad_usage(f"--port {port}: choose 1-65535")
    from voxtral_mlx.serve.config import ConfigError, ServerConfig, raise_open_file_limit

    raise_open_file_limit()  # before the default --max-connections is read from it
    given = {  # ServerConfig's field: the option that sets it, and its value as given
        "max_sessions": ("--max-sessions", max_sessions),
        "max_message_bytes": ("--max-message-mb", max_message_mb),
        "max_backlog_seconds": ("--max-backlog", max_backlog),
        "max_upload_bytes": ("--max-upload-mb", max_upload_mb),
        "idle_timeout": ("--idle-timeout", idle_timeout),
        "read_timeout": ("--read-timeout", read_timeout),
        "max_connections": ("--max-connections", max_connections),
        "served_model_name": ("--served-model-name", served_model_name),
        "delay_ms": ("--delay", delay),
        "context_bias": ("--context-bias", None),
        "context_bias_strength": ("--context-bias-strength", context_bias_strength),
    }
    try:
        config = ServerConfig(
            model_name=model,
            delay_ms=delay,  # None: the model's own
            api_key=api_key,
            max_sessions=max_sessions,
            max_message_bytes=_megabytes(max_message_mb),
            max_backlog_seconds=max_backlog,
            max_upload_bytes=_megabytes(max_upload_mb),
            cors_origins=tuple(cors_origin or ()),
            served_model_name=served_model_name,
            idle_timeout=idle_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            context_bias=tuple(vocabulary or ()),
            context_bias_strength=context_bias_strength or DEFAULT_STRENGTH,
        )
    except ConfigError as e:
        option, value = given[e.field]
        shown = f" {value:g}" if isinstance(value, (int, float)) else ""
        bad_usage(f"{option}{shown}: {e.rule}")
    _check_port_free(host, port)

    from rich.console import Console

    from voxtral_mlx.serve import serve as run

    try:
        loaded = load_model(model, offline)
    except VoxtralError as e:
        fail(str(e))
    err = Console(stderr=True)

    def ready() -> None:
        if open_page:
            import webbrowser

            webbrowser.open(f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/")
        auth = "api key required" if api_key else "no api key"
        err.print(
            f"serving {model} on http://{host}:{port} (ws://{host}:{port}/v1/realtime, {auth})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )

    try:
        run(loaded, config, host, port, ready=ready)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror}")


def _megabytes(mb: float) -> float:
    """Bytes (an int) of a size in MB; inf and nan are left for ServerConfig to refuse."""
    return int(mb * 2**20) if math.isfinite(mb) else mb


def _check_port_free(host: str, port: int) -> None:
    """Fail before the model loads when the address cannot be bound (in use, not ours)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            fail(f"cannot listen on {host}:{port}: {e.strerror}")


@command(cls=Command, name="eval")
def evaluate(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATHS", help="Audio files or folders with NAME.txt references."),
    ],
    model: ModelOpt = DEFAULT_MODEL,
    delay: DelayOpt = None,
    as_json: Annotated[
        bool, flag("--json", help="Print per-file and overall scores as JSON.")
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
    context_bias: ContextBiasOpt = None,
    context_bias_file: ContextBiasFileOpt = None,
    context_bias_strength: ContextBiasStrengthOpt = None,
) -> None:
    """Word and character error rates (normalized text) over audio with reference transcripts."""
    from voxtral_mlx.evaluation import Report, check_normalizer, find_pairs
    from voxtral_mlx.evaluation import evaluate as run

    from .ui import INTERRUPTED_EXIT, about, plural

    vocabulary = context_bias_list(context_bias, context_bias_file, context_bias_strength)
    try:
        check_normalizer(normalizer)
    except VoxtralError as e:
        bad_usage(str(e))
    try:
        pairs = find_pairs(paths)
        loaded = load_model(model, offline)
    except VoxtralError as e:
        fail(str(e))
    delay = loaded.args.schedule(delay).delay_ms
    report = Report(normalizer)
    interrupted = False
    try:
        with status_spinner(f"transcribing {plural(len(pairs), 'file')}"):
            run(loaded, pairs, delay, normalizer, report, context_bias=vocabulary)
    except KeyboardInterrupt:  # the scores so far are still worth having
        interrupted = True
    for name, why in report.failed:
        print_error(about(name, why))
    if interrupted:
        done = len(report.files)
        print_error(
            f"stopped after {done} of {plural(len(pairs), 'file')}: "
            + ("the scores are partial" if done else "nothing to score yet"),
            label="interrupted",
        )
    if report.files or as_json:
        _print_eval(report, model, delay, as_json, partial=interrupted)
    if interrupted:
        raise typer.Exit(INTERRUPTED_EXIT)
    if report.failed:
        raise typer.Exit(1)


def _print_eval(report, model: str, delay: int, as_json: bool, partial: bool) -> None:
    """The scores, per file and overall: a table, or JSON."""
    from voxtral_mlx.evaluation import NORMALIZERS

    from .ui import plural

    if as_json:
        import json

        keys = ("audio", "wer", "cer", "words", "reference", "hypothesis")
        summary = {
            "model": model,
            "delay_ms": delay,
            "normalizer": report.normalizer,
            "files": [{key: getattr(f, key) for key in keys} for f in report.files],
            "failed": [{"file": name, "error": why} for name, why in report.failed],
            "partial": partial,
            "wer": report.wer,
            "cer": report.cer,
            "audio_seconds": report.audio_seconds,
            "real_time_factor": report.elapsed_seconds / max(report.audio_seconds, 1e-9),
        }
        print(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("file", "WER", "CER", "hypothesis", box=None)
    for f in report.files:
        name = Path(f.audio).name + ("" if f.words else " (empty reference)")
        table.add_row(
            escape(name), f"{100 * f.wer:.1f}%", f"{100 * f.cer:.1f}%", escape(f.hypothesis[:60])
        )
    console = Console()
    console.print(table)
    console.print(
        f"{'partial' if partial else 'overall'}: WER {100 * report.wer:.2f}%  "
        f"CER {100 * report.cer:.2f}%  over {plural(len(report.files), 'file')}, "
        f"{report.audio_seconds:.1f} s of audio, delay {delay} ms, normalizer "
        f"{report.normalizer} ({NORMALIZERS[report.normalizer]})",
        highlight=False,
        markup=False,
    )


@command(cls=Command)
def devices() -> None:
    """List the audio input devices (index, name, channels, default rate)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .capture import input_devices

    try:
        found = input_devices()
    except VoxtralError as e:
        fail(str(e))
    if not found:
        fail("no audio input device found")
    table = Table("", "index", "name", "channels", "rate", box=None)
    for d in found:
        table.add_row(
            "*" if d.is_default else "", str(d.index), Text(d.name), str(d.channels), f"{d.rate} Hz"
        )
    Console().print(table)


@command(cls=Command)
def download(
    repo: Annotated[
        str, typer.Argument(metavar="REPO", help="Hugging Face repo id.")
    ] = DEFAULT_MODEL,
) -> None:
    """Download a model into the Hugging Face cache (for offline use later)."""
    from voxtral_mlx.loader import resolve_model_path

    try:
        path = resolve_model_path(repo, offline=False)
    except VoxtralError as e:
        fail(str(e))
    print(path)


@command(cls=Command)
def convert(
    ctx: typer.Context,
    hf_path: Annotated[
        str,
        typer.Option(
            "--hf-path", metavar="REPO|DIR", help="Source: repo id or directory, any layout."
        ),
    ],
    mlx_path: Annotated[
        Path, typer.Option("--mlx-path", metavar="DIR", help="Where to write the MLX checkpoint.")
    ],
    quantize: Annotated[
        bool, flag("--quantize", "-q", help="Quantize linear layers and the embedding.")
    ] = False,
    q_bits: Annotated[
        int,
        typer.Option("--q-bits", metavar="BITS", help="Bits per weight: 4, 6 or 8 (implies -q)."),
    ] = 4,
    q_group_size: Annotated[
        int,
        typer.Option("--q-group-size", metavar="N", help="Group size: 32, 64 or 128 (implies -q)."),
    ] = 64,
    dtype: DtypeOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Write an MLX checkpoint (optionally quantized) that `voxtral_mlx.load` reads."""
    from voxtral_mlx.config import QUANT_BITS, QUANT_GROUP_SIZES

    from .files import writable_folder

    check_choice(dtype, DTYPES, "--dtype")
    check_choice(q_bits, QUANT_BITS, "--q-bits")
    check_choice(q_group_size, QUANT_GROUP_SIZES, "--q-group-size")
    # the quantization settings mean nothing unquantized: giving one asks for quantization
    quantize = quantize or given(ctx, "q_bits") or given(ctx, "q_group_size")
    if mlx_path.exists() and not mlx_path.is_dir():
        fail(f"cannot write to {mlx_path}: it exists and is not an empty folder")
    if mlx_path.is_dir() and any(mlx_path.iterdir()):
        fail(f"cannot write to {mlx_path}: it exists and is not empty")
    if why := writable_folder(mlx_path.parent):
        fail(f"cannot write to {mlx_path}: {why}")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    import mlx.core as mx

    from voxtral_mlx.convert import convert as run

    try:
        with status_spinner("converting"):
            out = run(
                hf_path,
                mlx_path,
                bits=q_bits if quantize else None,
                group_size=q_group_size,
                dtype=getattr(mx, dtype) if dtype else None,
                offline=offline or None,
            )
    except VoxtralError as e:
        fail(str(e))
    print(out)


@command(cls=Command)
def bench(
    ctx: typer.Context,
    model: ModelOpt = DEFAULT_MODEL,
    random_weights: Annotated[
        bool,
        flag("--random-weights", help="The real architecture with random weights: no download."),
    ] = False,
    size: Annotated[
        str,
        typer.Option(
            "--size",
            metavar="SIZE",
            help="With --random-weights: full (4.4 B) or small (any machine).",
        ),
    ] = "full",
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype", metavar="DTYPE", help="float16, bfloat16 or float32 (default: the model's)."
        ),
    ] = None,
    q_bits: Annotated[
        int | None,
        typer.Option("--q-bits", metavar="BITS", help="Quantize to 4, 6 or 8 bits first."),
    ] = None,
    q_group_size: Annotated[
        int, typer.Option("--q-group-size", metavar="N", help="Group size: 32, 64 or 128.")
    ] = 64,
    delay: DelayOpt = None,
    audio: Annotated[
        Path | None,
        typer.Option(
            "--audio", metavar="FILE", help="Speech to run on (default: the bundled 11 s clip)."
        ),
    ] = None,
    as_json: Annotated[bool, flag("--json", help="Print the figures as JSON.")] = False,
    offline: OfflineOpt = False,
) -> None:
    """Time every stage end to end on real speech: mel, encoder, decoder, real-time factor."""
    import json

    from voxtral_mlx.config import BENCH_SIZES, QUANT_BITS, QUANT_GROUP_SIZES

    check_choice(dtype, DTYPES, "--dtype")
    check_choice(size, BENCH_SIZES, "--size")
    if random_weights and given(ctx, "model"):
        bad_usage("--model and --random-weights exclude each other")
    if given(ctx, "size") and not random_weights:
        bad_usage("--size applies to --random-weights (a model's size is its own)")
    check_choice(q_bits, QUANT_BITS, "--q-bits")
    check_choice(q_group_size, QUANT_GROUP_SIZES, "--q-group-size")
    if given(ctx, "q_group_size") and q_bits is None:
        bad_usage("--q-group-size applies to --q-bits (give the bits to quantize to)")
    import mlx.core as mx

    from voxtral_mlx import load_audio
    from voxtral_mlx.bench import BUNDLED_SPEECH, check_length

    try:
        speech = load_audio(audio or BUNDLED_SPEECH)
        check_length(speech)  # before the model is made
        with status_spinner("preparing the model"):
            if random_weights:
                from voxtral_mlx.bench import random_model

                loaded = random_model(size, getattr(mx, dtype or "bfloat16"))
            else:
                loaded = load_model(model, offline)
                if dtype is not None:
                    loaded.set_dtype(getattr(mx, dtype))
            if q_bits is not None:
                from voxtral_mlx.convert import quantize

                quantize(loaded, q_bits, q_group_size)
        from voxtral_mlx.bench import run

        with status_spinner("measuring"):
            result = run(loaded, speech, delay)
    except VoxtralError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    _print_bench(result, "random weights, " + size if random_weights else model)


def _print_bench(r, label: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"voxtral bench: {escape(label)}", box=None, title_justify="left")
    table.add_column("stage")
    table.add_column("figure", justify="right")
    rows = [
        ("mel", f"{r.mel_ms_per_step:.3f} ms / 80 ms step"),
        ("encoder, streamed", f"{r.encoder_ms_per_step_streamed:.2f} ms / step"),
        ("encoder, batched", f"{r.encoder_ms_per_step_batched:.2f} ms / step"),
        ("decoder prefill", f"{r.decoder_prefill_ms:.1f} ms"),
        ("decoder", f"{r.decoder_ms_per_step:.2f} ms / step"),
        ("end to end", f"{r.tokens_per_second:.1f} tokens/s, RTF {r.real_time_factor:.3f}"),
        ("tokens per pass", f"{r.tokens_per_pass:.2f} (drafted pads verified)"),
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
        markup=False,
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
            "--version",
            metavar="",
            callback=version_callback,
            is_eager=True,
            help="Show the version.",
        ),
    ] = False,
) -> None:
    """Streaming speech-to-text with Voxtral Mini 4B Realtime on MLX."""


def _click_exceptions():
    """Click's exceptions module: typer vendors Click from 0.23 on, earlier versions use
    Click."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The library's warnings (VoxtralWarning) as one line each, like its errors."""
    if issubclass(category, VoxtralWarning):
        print_error(str(message), label="warning")
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _reopen_closed_standard_streams() -> list[int]:
    """Descriptors 0, 1 and 2 that were closed (as some launchers and cron leave them),
    reopened on /dev/null: otherwise the next file opened (MLX's weights file) gets one of
    them, and reading stdin or printing goes to that file. Returns those reopened."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:  # the lowest free descriptor: fd itself unless a lower one is closed
            os.dup2(null, fd)
            os.close(null)
        name = ("stdin", "stdout", "stderr")[fd]
        if getattr(sys, name) is None:  # Python leaves it None when the descriptor is closed
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))
    return closed


def main() -> None:
    """The console script: Click's usage errors become one line too (exit code 2), the
    library's warnings one line each."""
    if 1 in _reopen_closed_standard_streams():
        print_error("standard output is closed: what is printed there is lost", label="warning")
    warnings.showwarning = _show_warning
    exceptions = _click_exceptions()
    # `voxtral` alone prints the help (Click raises this after printing it): not an error
    no_args = getattr(exceptions, "NoArgsIsHelpError", ())
    try:
        code = typer.main.get_command(app).main(prog_name="voxtral", standalone_mode=False)
    except no_args:
        code = 0
    except exceptions.UsageError as e:
        name = e.ctx.command_path if e.ctx is not None else "voxtral"
        print_error(f"{e.format_message()} (see {name} --help)")
        code = USAGE_EXIT
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
