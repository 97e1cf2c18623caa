"""Qwen3 through the same cells: its norm on every query and key head, its stated head width,
its own vocabulary.

A random Qwen3 checkpoint is made here with transformers' own `Qwen3ForCausalLM` and saved as
the hub's files are (config.json, safetensors in bfloat16), every norm's gains random so that
a gain read in the wrong order shows. It is tied, has grouped queries and heads of 32 features
where its width split among its heads would give 16. Its vocabulary is laid out as Qwen3's is
(NFC, Qwen's split pattern, one merge a token in rank order, ChatML's special tokens after the
ranked ones), trained here by Hugging Face's `tokenizers` on the corpus and the multilingual
sentences: Qwen3's own 151,669 tokens are not here (docs/testing.md says how they were checked
by hand against llama.cpp's test tokens).

The notebook runs on it unchanged, in float32, every demo included; in the same kernel its
`forward` also reads a 200-token prompt (notebook_values.other_prompts), and `generate` writes
with and without the cache, one prompt alone and in a batch (test_generation.generations). Its
tensors, layer by layer, and its greedy tokens are compared with transformers' model loaded from
the same folder, its tokens with `tokenizers` on every token of the vocabulary. A GGUF file of
it, as llama.cpp's converter writes one (architecture qwen3: its rows in Hugging Face's order,
its head width as the key length, the vocabulary's pattern named "qwen2"), gives the folder's
tensors and the same tokenizer.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import threading
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import Qwen3ForCausalLM

import tokenizer_setup
from plumbing import REPO_DIR, checkpoints, gguf_files, hf_checkpoint
from plumbing.friendly_errors import CheckpointError
from plumbing.run_settings import DEFAULT_PROMPT
from testbeds.gguf_writer import write_gguf
from testbeds.hf_folder import write_random_qwen3
from tests.multilingual_sentences import SENTENCES
from tests.support import reference_models, shared_runs
from tests.support.notebook_values import (
    FLOAT32_CPU,
    cell_text,
    other_prompts,
    run_and_read,
    setup_cell_in_process,
)
from tests.support.parity_runs import PROMPTS
from tests.test_generation import generations
from tests.test_tokenizer_parity import STRINGS

pytestmark = pytest.mark.slow  # runs the notebook in a kernel: `make quick` leaves it out


CORPUS = (REPO_DIR / "generators" / "corpus.txt").read_text().splitlines()
TEXTS = CORPUS + [sentence for sentences in SENTENCES.values() for sentence in sentences]


_writing = threading.Lock()


def qwen3_folder() -> Path:
    """The random Qwen3 folder, written once a session (the shared run's and the tests')."""
    folder = Path(shared_runs.SHARED.scratch.name) / "qwen3" / "random-qwen3"
    with _writing:
        if not folder.exists():
            write_random_qwen3(folder, texts=TEXTS)
    return folder


@pytest.fixture(scope="session")
def qwen3():
    return qwen3_folder()


@shared_runs.declared
def qwen3_run():
    """The notebook on the random Qwen3 in float32, every demo too (each cell that names a
    special token or begins a text reads Qwen3's), started with the suite's other shared runs;
    in the same kernel a 200-token prompt through `forward` and `generate`'s tokens."""
    settings = {**FLOAT32_CPU, "LLAMA3_EXTRAS": "1", "LLAMA3_CKPT": str(qwen3_folder())}
    settings["OMP_NUM_THREADS"] = "1"
    also = [(other_prompts, {"long": PROMPTS["long"]}), (generations,)]
    return run_and_read(Path(shared_runs.SHARED.scratch.name) / "qwen3-run", settings, also=also)


@pytest.fixture(scope="session")
def reference(qwen3):
    return Qwen3ForCausalLM.from_pretrained(qwen3, dtype=torch.float32).eval()


def test_the_folder_opens_with_its_sizes_and_its_norms(qwen3):
    checkpoint = checkpoints.open_checkpoint(qwen3)
    assert checkpoint.reader is hf_checkpoint
    params = checkpoint.params
    assert (params["head_dim"], params["qk_norm"], params["tied_output"]) == (32, True, True)
    assert params["rope_theta"] == 1_000_000.0
    gains = checkpoint.weights["layers.1.attention.k_norm.weight"]
    assert gains.shape == (32,)


def test_each_heads_gains_come_in_the_order_of_its_rows(qwen3, reference):
    # the reader puts each head's q and k rows in Meta's order (RoPE pairs side by side):
    # the gains of that head's features must move with them
    weights = checkpoints.open_checkpoint(qwen3).weights
    attention = reference.model.layers[0].self_attn
    order = hf_checkpoint.hf_rows_to_meta(torch.arange(32.0), 1).long()
    for ours, theirs in (("q_norm", attention.q_norm), ("k_norm", attention.k_norm)):
        read = weights[f"layers.0.attention.{ours}.weight"].float()
        assert torch.equal(read, theirs.weight.detach()[order]), ours
        assert not torch.equal(read, theirs.weight.detach())  # random gains: the order shows


def test_the_notebook_states_the_head_width_and_predicts_as_transformers(qwen3_run, reference):
    assert "head_dim = 32, as stated" in cell_text(qwen3_run["notebook"], "sizes-read")
    assert "Hugging Face layout" in cell_text(qwen3_run["notebook"], "prelims-code")
    theirs = reference_models.hf_tensors(reference, qwen3_run["prompt_tokens"])
    assert int(theirs["logits"].argmax()) == qwen3_run["next_token_id"]


@pytest.mark.parametrize("prompt", ["canonical-17", "long"])
def test_float32_layer_by_layer(qwen3_run, reference, prompt):
    ours = qwen3_run
    if prompt == "long":
        ours = torch.load(qwen3_run["files"]["other_prompts"], weights_only=True)["long"]
        assert len(ours["prompt_tokens"]) >= 200
    theirs = reference_models.hf_tensors(reference, ours["prompt_tokens"])
    diffs = reference_models.layer_differences(ours, theirs)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= reference_models.FP32_TOLERANCE, (
        f"{worst} differs from transformers' Qwen3 by {diffs[worst]:.2e} (all: {diffs})"
    )


def test_generation_with_the_cache_equals_recomputing_and_transformers(qwen3_run, reference, qwen3):
    made = json.loads(qwen3_run["files"]["generations"].read_text())
    stop = sorted(tokenizer_setup.load_tokenizer(hf_checkpoint.tokenizer_source(qwen3)).stop_tokens)
    assert made["cached"] == made["recomputed"]
    assert made["batches"]["together"] == made["batches"]["alone"]
    tokens = qwen3_run["prompt_tokens"]  # the canonical prompt's
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([tokens]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=stop[0],
        )
    new = out[0, len(tokens) :].tolist()
    new = new[: next((i for i, token in enumerate(new) if token in stop), len(new))]
    assert made["cached"][DEFAULT_PROMPT] == new and len(new) > 0


def edited_config(qwen3: Path, folder: Path, **changes) -> Path:
    folder.mkdir()
    config = json.loads((qwen3 / "config.json").read_text()) | changes
    config = {key: value for key, value in config.items() if value is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
            "describes Qwen2ForCausalLM, not LlamaForCausalLM or Qwen3ForCausalLM: this notebook "
            "runs Llama 3 and Qwen3 models only (qwen2 adds biases on the query, key and value "
            "projections, which it does not teach)",
        ),
        ({"use_sliding_window": True}, "sets use_sliding_window: attention over a sliding window"),
        ({"attention_bias": True}, "sets attention_bias: biases on attention's projections"),
        ({"head_dim": None}, "states no head_dim, which every Qwen3 config.json states"),
    ],
)
def test_what_the_notebook_does_not_teach_is_one_sentence(qwen3, tmp_path, changes, message):
    folder = edited_config(qwen3, tmp_path / "edited", **changes)
    with pytest.raises(CheckpointError) as raised:
        hf_checkpoint.read_params(folder)
    assert message in str(raised.value)
    assert str(raised.value).count(". ") == 0  # one sentence


@pytest.mark.parametrize("kind", ["BF16", "Q8_0"])
def test_a_qwen3_gguf_file_gives_the_folders_tensors(qwen3, tmp_path, kind):
    path = write_gguf(qwen3, tmp_path / f"qwen3-{kind}.gguf", kind, architecture="qwen3")
    folder, file = checkpoints.open_checkpoint(qwen3), checkpoints.open_checkpoint(path)
    assert file.reader is gguf_files
    for key in ("head_dim", "qk_norm", "n_kv_heads", "rope_theta", "norm_eps", "tied_output"):
        assert file.params[key] == folder.params[key], key
    assert list(file.weights) == list(folder.weights)
    for name in folder.weights:
        ours, theirs = file.weights[name], folder.weights[name].float()
        ours = ours.full() if isinstance(ours, gguf_files.BlockMatrix) else ours.float()
        if kind == "BF16" or ours.dim() == 1:  # bf16 as stored; vectors are kept in float32
            assert torch.equal(ours, theirs), name
        else:  # Q8_0: within a step of 1/127 of each block's largest; a row out of place: far
            step = theirs.abs().max() / 127
            assert (ours - theirs).abs().max() <= step, name


def hugging_face(qwen3: Path) -> Tokenizer:
    """The folder's tokenizer.json read by Hugging Face's `tokenizers`, a special token's name
    in a text read as text, as the notebook reads it (Qwen3's added tokens that are not special,
    <think> and the others, it would still take as tokens: the texts here spell none)."""
    reference = Tokenizer.from_file(str(qwen3 / "tokenizer.json"))
    reference.encode_special_tokens = True
    return reference


@pytest.mark.parametrize("source", ["tokenizer.json", "gguf"])
def test_the_vocabulary_encodes_as_tokenizers_does_every_token_and_text(qwen3, tmp_path, source):
    if source == "gguf":
        path = write_gguf(qwen3, tmp_path / "qwen3.gguf", "BF16", architecture="qwen3")
        ours = tokenizer_setup.load_tokenizer(gguf_files.tokenizer_source(path))
    else:
        ours = tokenizer_setup.load_tokenizer(hf_checkpoint.tokenizer_source(qwen3))
    reference = hugging_face(qwen3)
    texts = [token.decode("utf-8", "replace") for token in ours._mergeable_ranks]  # every one
    texts += TEXTS + STRINGS + ["é and e\u0301: NFC", "<|im_end|> spelled", "12345 digits"]
    for text in texts:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, disallowed_special=()) == expected, text
    assert ours.begin_of_text == [] and ours.nfc
    assert ours.stop_tokens == {
        reference.token_to_id(name) for name in ["<|endoftext|>", "<|im_end|>"]
    }


def test_the_chat_cell_writes_chatml(qwen3_run, qwen3):
    question = "What is the answer to the ultimate question of life, the universe, and everything?"
    chatml = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    expected = Tokenizer.from_file(str(qwen3 / "tokenizer.json")).encode(chatml).ids
    assert cell_text(qwen3_run["notebook"], "chat-tokens").startswith(f"{expected}\n")
    assert "no row without <|begin_of_text|>: this vocabulary begins a text with nothing" in (
        cell_text(qwen3_run["notebook"], "bugs-measure-every")
    )
    last = next(cell for cell in reversed(qwen3_run["notebook"].cells) if cell.cell_type == "code")
    assert last.get("execution_count"), "the last code cell did not run"


def test_an_empty_prompt_is_refused_in_one_sentence(qwen3):
    text = setup_cell_in_process({**FLOAT32_CPU, "LLAMA3_CKPT": str(qwen3), "LLAMA3_PROMPT": ""})
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "no token that begins a text (Qwen3's has none)" in text


def edited_tokenizer(qwen3: Path, folder: Path, edit) -> Path:
    folder = shutil.copytree(qwen3, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    edit(data)
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return folder


def swap_two_merges(data):
    merges = data["model"]["merges"]
    merges[10], merges[20] = merges[20], merges[10]


def drop_chatml(data):
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|im_end|>"]


def another_pattern(data):
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (swap_two_merges, "is out of rank order, so merging by rank, as this notebook's BPE does"),
        (drop_chatml, "that are not Llama 3's vocabulary, and no <|im_end|>, so not one like"),
        (another_pattern, "does not split text as Llama 3's or Qwen3's tokenizer does"),
    ],
)
def test_a_vocabulary_read_otherwise_stops_the_setup_cell_in_one_sentence(
    qwen3, tmp_path, edit, message
):
    folder = edited_tokenizer(qwen3, tmp_path / "edited", edit)
    text = setup_cell_in_process({**FLOAT32_CPU, "LLAMA3_CKPT": str(folder)})
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and message in text, text


def test_a_row_past_the_vocabulary_decodes_to_no_text_as_tokenizers_does(qwen3):
    # Qwen3 has 151,936 output rows for 151,669 tokens; so has this folder a few rows more
    ours = tokenizer_setup.load_tokenizer(hf_checkpoint.tokenizer_source(qwen3))
    rows = checkpoints.open_checkpoint(qwen3).params["vocab_size"]
    assert rows > ours.n_vocab
    past = list(range(ours.n_vocab, rows))
    hello = ours.encode("hello")
    assert ours.decode(hello + past) == hugging_face(qwen3).decode(hello + past) == "hello"


def test_a_copied_or_pickled_tokenizer_keeps_what_is_around_its_bpe(qwen3, tokenizer):
    qwen = tokenizer_setup.load_tokenizer(hf_checkpoint.tokenizer_source(qwen3))
    for original in (qwen, tokenizer):  # Qwen3's and Llama 3's
        for copied in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
            assert copied.around == original.around
            assert copied.encode("e\u0301 and 123") == original.encode("e\u0301 and 123")
            assert copied.stop_tokens == original.stop_tokens
