"""The Hugging Face Hub is asked only about a hub id, and without a network a job is told at once."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from mtfleet.engines import check_model
from mtfleet.engines import hub as hub_module
from mtfleet.engines.hub import hub_unreachable, use_hub
from mtfleet.engines.tokens import ModelTokenizer
from mtfleet.errors import ModelError

# a port nothing listens on: the connection is refused at once
NO_HUB = "http://127.0.0.1:9"


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The Hub unreachable and an empty cache (its folder given); offline mode as it was after."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "ENDPOINT", NO_HUB)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub_unreachable.cache_clear()
    yield cache
    hub_unreachable.cache_clear()


def test_a_hub_id_without_the_hub_is_one_sentence_at_once(no_hub: Path) -> None:
    with pytest.raises(ModelError) as refused:
        check_model("hf", "someone/some-model", tgt_lang="de")

    assert str(refused.value).startswith(
        "Model 'someone/some-model' is no local directory, and the Hugging Face Hub "
        f"({NO_HUB}) cannot be reached to fetch it ("
    )
    assert str(refused.value).endswith(
        "give a model directory, or run where the Hub can be reached."
    )


def test_a_cached_hub_model_without_the_hub_is_read_offline_from_the_cache(
    no_hub: Path, tiny_marian_dir: Path
) -> None:
    snapshot = no_hub / "models--someone--tiny-marian" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_marian_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")

    tokens = ModelTokenizer("someone/tiny-marian")

    assert constants.HF_HUB_OFFLINE
    assert tokens.encode(["Hello."]) == ModelTokenizer(str(tiny_marian_dir)).encode(["Hello."])


def test_a_local_model_directory_never_reaches_the_network(
    no_hub: Path, tiny_marian_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the network was asked: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(hub_module, "hub_unreachable", no_network)

    tokens = ModelTokenizer(str(tiny_marian_dir))

    assert tokens.source == str(tiny_marian_dir.resolve())
    assert not constants.HF_HUB_OFFLINE


def test_in_offline_mode_the_hub_is_not_asked(
    no_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_module, "hub_unreachable", pytest.fail)

    use_hub("someone/some-model")
