"""LLAMA3_CKPT=org/name: a model id found in the local Hugging Face cache, offline, in place.

The notebook's own run through a model id is tests/test_hugging_face.py's `hf_run`, whose
folder is reached that way; here, the resolution and every sentence it can end in.
"""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from plumbing import checkpoint_files, checkpoints, model_ids
from plumbing.checkpoint_files import EMBEDDED_CHECKPOINT
from testbeds.hub_cache import cache_model
from tests.support.notebook_values import setup_cell_in_process

MODEL = "test-org/llama3-tiny"
REFUSED = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("LLAMA3_DOWNLOAD", raising=False)
    return cache


def test_a_cached_model_resolves_offline_to_its_snapshot(hub, tmp_path):
    # Meta's files here, under original/, as the hub's Llama repositories carry them
    snapshot = cache_model(EMBEDDED_CHECKPOINT, hub, MODEL, under="original")
    folder = checkpoint_files.find_checkpoint_dir(MODEL)
    assert folder == snapshot / "original"  # nothing copied: the cache's own folder
    assert (folder / "consolidated.00.pth").is_symlink()
    assert checkpoints.read_params(folder)["dim"] == 64


def test_a_relative_folder_that_looks_like_an_id_stays_a_folder(tmp_path, monkeypatch):
    (tmp_path / "weights" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not model_ids.looks_like_model_id("weights/tiny")
    assert model_ids.looks_like_model_id("meta-llama/Llama-3.2-1B")


def test_not_cached_and_no_download_is_one_sentence(hub):
    text = setup_cell_in_process({"LLAMA3_CKPT": "meta-llama/Llama-3.2-1B"})  # HF_HUB_CACHE: hub
    assert (
        text.startswith(
            f"ModelIdError: meta-llama/Llama-3.2-1B is not in the Hugging Face cache ({hub}): set "
            "LLAMA3_DOWNLOAD=1 to download the files the notebook reads"
        )
        and text.count("\n") == 1
    ), text


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            GatedRepoError("gated", response=REFUSED),
            "is gated: accept its licence on "
            "https://huggingface.co/meta-llama/Llama-3.2-1B, then log in with `hf auth login`",
        ),
        (
            RepositoryNotFoundError("nope", response=REFUSED),
            "is not a model on the Hugging Face Hub, or it is private",
        ),
        (
            LocalEntryNotFoundError("offline"),
            "could not be downloaded (LocalEntryNotFoundError: no network, or the Hub refused)",
        ),
    ],
)
def test_download_failures_name_the_fix(hub, monkeypatch, error, sentence):
    monkeypatch.setenv("LLAMA3_DOWNLOAD", "1")

    def snapshot_download(model_id, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise error

    monkeypatch.setattr(model_ids, "snapshot_download", snapshot_download)
    with pytest.raises(model_ids.ModelIdError, match="^meta-llama/Llama-3.2-1B ") as raised:
        model_ids.resolve("meta-llama/Llama-3.2-1B")
    assert sentence in str(raised.value)


def test_download_asks_only_for_the_files_the_notebook_reads(hub, monkeypatch, capsys):
    monkeypatch.setenv("LLAMA3_DOWNLOAD", "1")
    asked = {}

    def snapshot_download(model_id, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        asked.update(kwargs)
        return str(cache_model(EMBEDDED_CHECKPOINT, hub, model_id, under="original"))

    monkeypatch.setattr(model_ids, "snapshot_download", snapshot_download)
    folder = model_ids.resolve(MODEL)
    assert folder.name == "original" and asked["allow_patterns"] == model_ids.NOTEBOOK_FILES
    assert "downloading test-org/llama3-tiny" in capsys.readouterr().out


def test_a_bad_download_setting_is_one_sentence(hub, monkeypatch):
    monkeypatch.setenv("LLAMA3_DOWNLOAD", "maybe")
    with pytest.raises(model_ids.ModelIdError, match="LLAMA3_DOWNLOAD='maybe' is not understood"):
        model_ids.resolve(MODEL)


def test_an_id_that_is_not_a_llama3_is_one_sentence(hub, tmp_path):
    folder = tmp_path / "mistral"
    folder.mkdir()
    config = '{"architectures": ["MistralForCausalLM"], "model_type": "mistral"}'
    (folder / "config.json").write_text(config)
    (folder / "model.safetensors").write_bytes(b"")
    cache_model(folder, hub, "mistralai/Mistral-7B-v0.1")
    text = setup_cell_in_process({"LLAMA3_CKPT": "mistralai/Mistral-7B-v0.1"})
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "describes MistralForCausalLM, not LlamaForCausalLM or" in lines[0]
