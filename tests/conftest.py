from pathlib import Path

import pytest

from voxtral_mlx.testing import TinySpec, shared_audio, tiny_hf_model, write_official


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
    import voxtral_mlx

    path = shared_audio("jfk.wav")
    if not path.is_file():
        pytest.skip(f"shared audio not found at {path}")
    return voxtral_mlx.load_audio(path)
