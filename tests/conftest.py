import json
import os
import shutil
from pathlib import Path

import pytest

from voxtral_mlx.testing import TinySpec, tiny_hf_model, write_official


def pytest_report_header(config):
    """Which BLAS MLX's CPU backend computes with (make test loads OpenBLAS where it can):
    read from the libraries this process has loaded, not from LD_PRELOAD's text."""
    try:
        maps = open("/proc/self/maps").read()
    except OSError:  # not Linux
        return "BLAS: the MLX build's own"
    loaded = "libopenblas" in maps and "openblas" in os.environ.get("LD_PRELOAD", "")
    blas = "OpenBLAS (LD_PRELOAD)" if loaded else "the MLX wheel's own (reference)"
    return f"BLAS: {blas}"


@pytest.fixture(scope="session")
def spec() -> TinySpec:
    return TinySpec()


@pytest.fixture(scope="session")
def hf_model(spec):
    return tiny_hf_model(spec)


@pytest.fixture(scope="session")
def official_dir(hf_model, spec, tmp_path_factory) -> Path:
    return write_official(hf_model, spec, tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="session")
def model(official_dir):
    import voxtral_mlx

    return voxtral_mlx.load(official_dir)


@pytest.fixture(scope="session")
def jfk():
    """The 11 s clip the package ships (`voxtral bench`'s speech)."""
    import voxtral_mlx
    from voxtral_mlx.bench import BUNDLED_SPEECH

    return voxtral_mlx.load_audio(BUNDLED_SPEECH)


@pytest.fixture(scope="session")
def reference_tokens(hf_model, model, jfk, tmp_path_factory, worker_id):
    """transformers' greedy tokens for the jfk clip at a delay (`reference_tokens(480)`),
    the reference of the parity tests: generate() once per delay in a run, shared by the
    pytest-xdist workers through a file in the run's temporary folder (the tiny model is
    seeded, so every worker's is the same)."""
    import torch
    from filelock import FileLock
    from transformers import VoxtralRealtimeFeatureExtractor

    from voxtral_mlx.offline import pad_audio

    # the run's folder (above each worker's); without workers, this process's own
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if worker_id != "master" else shared

    def generate(delay_ms: int) -> list[int]:
        args = model.args.schedule(delay_ms)
        feats = VoxtralRealtimeFeatureExtractor()(
            pad_audio(jfk, args), sampling_rate=16000, return_tensors="pt"
        )["input_features"]
        prompt = [1] + [32] * (args.prompt_length - 1)
        with torch.no_grad():
            out = hf_model.generate(
                input_ids=torch.tensor([prompt]),
                input_features=feats,
                num_delay_tokens=args.n_delay_tokens,
                do_sample=False,
            )
        return out[0, len(prompt) :].tolist()

    def tokens(delay_ms: int) -> list[int]:
        path = shared / f"reference-jfk-{delay_ms}ms.json"
        with FileLock(f"{path}.lock"):
            if not path.is_file():
                path.write_text(json.dumps(generate(delay_ms)))
            return json.loads(path.read_text())

    return tokens


TRAINED = Path(__file__).parent / "assets" / "tiny-voxtral"  # the tiny trained model
HELD_OUT_SEED = 987654  # training used 1234 to 1238


@pytest.fixture(scope="session")
def trained():
    """The tiny trained model (22 spoken words), loaded once."""
    import voxtral_mlx

    return voxtral_mlx.load(TRAINED)


@pytest.fixture(scope="session")
def held_out(tmp_path_factory):
    """24 held-out utterances the trained model never saw (espeak-ng, seeded): the folder
    (NAME.wav + NAME.txt + NAME.align.json) and the utterances. Read-only for tests."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed to generate held-out speech")
    from data import write_set

    folder = tmp_path_factory.mktemp("held-out")
    return folder, write_set(folder, 24, HELD_OUT_SEED)


@pytest.fixture(scope="session")
def trained_server():
    """`voxtral serve` with the trained model and its default options (a real process), for
    every module that needs no other: its port. Tests leave it as they found it."""
    from test_server import start_server

    proc, port = start_server(TRAINED)
    yield port
    proc.terminate()
    proc.wait(10)


# `make test` runs the files on two pytest-xdist workers, a whole file at a time (--dist
# loadfile): the longest files go first, so that none of them starts last while the other
# worker sits idle (the order of a run's per-file durations, `pytest --durations=0`).
LONGEST_FIRST = (
    "test_trained.py",
    "test_biasing.py",
    "test_parity.py",
    "test_quantized.py",
    "test_session.py",
    "test_server.py",
    "test_serve_limits.py",
    "test_bench.py",
    "test_pool.py",
    "test_cli.py",
    "test_dictate.py",
    "test_browser.py",
    "test_mistral_api.py",
    "test_meeting.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
