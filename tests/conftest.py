import shutil
from pathlib import Path

import pytest

from voxtral_mlx.testing import TinySpec, tiny_hf_model, write_official


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
