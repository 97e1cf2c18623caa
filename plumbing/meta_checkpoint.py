"""Read a checkpoint in Meta's layout: params.json and consolidated.*.pth — plumbing only.

Meta's download (the `original/` folder on Hugging Face) holds the sizes in `params.json`
and the tensors, already under Meta's names, in `consolidated.00.pth`; the 70B and 405B
split them across model-parallel shards `consolidated.00.pth … NN.pth`. `read_params`
gives params.json, checked; `weights` memory-maps the files (`torch.load(…, mmap=True,
weights_only=True)`: nothing is read until used, and a pickle that would run code is
refused).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

import tokenizer_setup
from plumbing import checkpoint_checks, meta_llama4, release_facts, tensor_names
from plumbing.checkpoint_files import TokenizerSource
from plumbing.friendly_errors import CheckpointError
from plumbing.tensor_names import NamedWeights

LAYOUT = "Meta's layout (consolidated.*.pth + params.json)"
SPELLING: dict[str, str] = {}  # params.json's keys are the notebook's own


def looks_like(path: Path) -> bool:
    """A folder with consolidated.*.pth (params.json is checked when it is read)."""
    return Path(path).is_dir() and any(Path(path).glob("consolidated.*.pth"))


def sizes_path(folder: Path) -> Path:
    """The file that states the sizes."""
    return Path(folder) / "params.json"


def llama4_adds(params: dict) -> list[str]:
    """What a Llama 4 params.json adds to Llama 3, in words (nothing for Llama 3's)."""
    llama4 = release_facts.LLAMA4_PARAMS
    return [what for key, what in llama4.items() if params.get(key) not in (None, False)]


def is_llama4(folder: Path) -> bool:
    """Whether params.json states Llama 4's keys (one that cannot be read is read_params' to
    name)."""
    try:
        return bool(llama4_adds(json.loads(sizes_path(folder).read_text())))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def read_params(folder: Path, llama4: bool = False) -> dict:
    """params.json: every key present, of the right type (sizes are checked by the caller). A
    Llama 4 model's only where `llama4` says the caller teaches it (the notebook's last
    section): the cells before it would run Llama 3's layer on it."""
    path = sizes_path(folder)
    params = checkpoint_checks.read_json_object(
        path, "copy params.json from the same download as the weights"
    )
    adds = llama4_adds(params)
    if llama4 and not adds:
        keys = ", ".join(release_facts.LLAMA4_PARAMS)
        raise CheckpointError(f"{path} is not a Llama 4 model's: it has none of {keys}.")
    if adds and not llama4:
        raise CheckpointError(
            f"{path} is a Llama 4 model's: it adds {', '.join(adds)}, which only the notebook's "
            "last section runs (set LLAMA3_CKPT to it and the lesson runs the embedded Llama 3)."
        )
    if llama4:
        checkpoint_checks.check_llama4_params(params, path)
    return checkpoint_checks.check_params_json(params, path)


def load_one(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(path, map_location="cpu", mmap=True, weights_only=True)`, with clear errors."""
    try:
        # Meta's Llama 4 files keep kernels' states beside some tensors as io.BytesIO buffers
        # (`…._extra_state`): allowed as data, and left out below
        with torch.serialization.safe_globals([io.BytesIO]):
            state_dict = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    # torch raises RuntimeError, UnpicklingError, ValueError, EOFError … depending on the damage
    except Exception as error:
        text = str(error)
        if mistake := checkpoint_checks.download_mistake(path):
            raise CheckpointError(f"{path} is {mistake}.") from None
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path} contains pickled code or objects that are not tensors; loading refused "
                "(weights_only=True), nothing in it was run. Use the file from Meta's "
                "download."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{text.splitlines()[0][:120] if text else 'no detail'}); it is truncated, "
            "corrupt or another kind of file — download it again."
        ) from None
    if isinstance(state_dict, dict):
        state_dict = {
            name: value
            for name, value in state_dict.items()
            if not (name.endswith("._extra_state") and isinstance(value, io.BytesIO))
        }
    if not isinstance(state_dict, dict) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CheckpointError(
            f"{path} holds a {type(state_dict).__name__}, not a dictionary of tensors: use the "
            "file from Meta's download."
        )
    return state_dict


class MetaWeights(NamedWeights):
    """consolidated.00.pth's tensors, memory-mapped: a lookup hands out the file's own tensor."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        self.state_dict = state_dict
        self.shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
        self.dtypes = {name: tensor.dtype for name, tensor in state_dict.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.state_dict[name]


def tokenizer_source(folder: Path) -> TokenizerSource:
    """Meta's folder keeps tiktoken's tokenizer.model beside the weights, else `llama-models`'s:
    Llama 4's for a Llama 4 folder, Llama 3's otherwise (tokenizer_setup finds that one)."""
    beside = Path(folder) / "tokenizer.model"
    params = Path(folder) / "params.json"
    if not beside.exists() and params.exists() and llama4_adds(json.loads(params.read_text())):
        packaged = tokenizer_setup.packaged_tokenizer_model("llama4")
        return TokenizerSource("tokenizer.model", packaged or beside)
    return TokenizerSource("tokenizer.model", beside)


def shard_axis(name: str) -> int | None:
    suffix = name.split(".", 2)[-1] if name.startswith("layers.") else name
    if suffix not in tensor_names.SHARD_AXIS:
        raise CheckpointError(
            f"unexpected tensor {name} in a sharded checkpoint: this is not a Llama 3 checkpoint "
            "in Meta's layout."
        )
    return tensor_names.SHARD_AXIS[suffix]


class ShardedWeights(NamedWeights):
    """A model-parallel checkpoint (consolidated.00.pth … NN.pth) read as one state dict.

    Every shard is memory-mapped; a tensor is assembled from its pieces only when it
    is looked up, so memory holds one whole tensor at a time, never the model.
    """

    def __init__(self, shards: list[dict[str, torch.Tensor]]):
        self.shards = shards
        self.shapes: dict[str, tuple[int, ...]] = {}
        for name, first in shards[0].items():
            axis = shard_axis(name)
            pieces = [shard.get(name) for shard in shards]
            if any(piece is None for piece in pieces):
                raise CheckpointError(
                    f"tensor {name} is missing from shard {pieces.index(None):02d}: download that "
                    "shard again."
                )
            shape = list(first.shape)
            if axis is not None:
                shape[axis] = sum(piece.shape[axis] for piece in pieces)
            self.shapes[name] = tuple(shape)
        self.dtypes = {name: tensor.dtype for name, tensor in shards[0].items()}

    def note(self) -> str:
        return f", {len(self.shards)} shards"

    def __getitem__(self, name: str) -> torch.Tensor:
        axis = shard_axis(name)
        if axis is None:
            return self.shards[0][name]
        return torch.cat([shard[name] for shard in self.shards], dim=axis)


def weights(folder: Path, params: dict) -> NamedWeights:
    """The tensors by Meta's names, memory-mapped: one file as it is, several joined; Meta's
    released Llama 4 files under the reference code's names (meta_llama4)."""
    paths = sorted(Path(folder).glob("consolidated.*.pth"))
    if len(paths) <= 1:
        paths = [Path(folder) / "consolidated.00.pth"]
    shards = [load_one(path) for path in paths]
    if meta_llama4.is_released(shards[0]):
        return meta_llama4.ReleasedWeights(shards, params)
    return MetaWeights(shards[0]) if len(shards) == 1 else ShardedWeights(shards)
