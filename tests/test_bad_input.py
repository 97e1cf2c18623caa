"""Every usual mistake gets one sentence that names the fix, and nothing is harmed.

(Wrong tokenizer files — missing, Llama 2 SentencePiece, Git LFS pointer, HTML page,
truncated — are covered in test_tokenizer.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from plumbing import (
    checkpoint_checks,
    checkpoint_files,
    checkpoints,
    model_sizes,
    release_facts,
    run_settings,
)
from plumbing.checkpoint_files import CheckpointError
from plumbing.run_settings import SettingError
from tests.support.notebook_values import (
    TENSORS_ONLY,
    cell_text,
    run_and_read,
    setup_cell_failure,
    setup_cell_in_process,
)

EMBEDDED = checkpoint_files.EMBEDDED_CHECKPOINT


@pytest.fixture
def good_copy(tmp_path) -> Path:
    """A writable copy of the embedded checkpoint to damage."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(EMBEDDED, folder)
    return folder


def params_of(folder: Path) -> dict:
    return json.loads((folder / "params.json").read_text())


def write_params(folder: Path, params) -> None:
    (folder / "params.json").write_text(json.dumps(params))


# ---- the checkpoint folder -------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist: set LLAMA3_CKPT"):
        checkpoint_files.find_checkpoint_dir(str(tmp_path / "nowhere"))


def test_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is empty"):
        checkpoint_files.find_checkpoint_dir(str(tmp_path))


def test_file_instead_of_folder(good_copy):
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        checkpoint_files.find_checkpoint_dir(str(good_copy / "consolidated.00.pth"))


def test_hugging_face_folder_with_an_empty_config(tmp_path):
    # Hugging Face folders are read (tests/test_hugging_face.py); one that says nothing is refused.
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    folder = checkpoint_files.find_checkpoint_dir(str(tmp_path))
    with pytest.raises(
        CheckpointError, match="describes an unnamed architecture, not LlamaForCausalLM or Qwen3"
    ):
        checkpoints.read_params(folder)


def test_safetensors_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(
        CheckpointError, match="has safetensors files but no config.json: copy config.json"
    ):
        checkpoint_files.find_checkpoint_dir(str(tmp_path))


def test_folder_without_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="has no consolidated.00.pth"):
        checkpoint_files.find_checkpoint_dir(str(tmp_path))


def test_params_json_missing(good_copy):
    (good_copy / "params.json").unlink()
    with pytest.raises(CheckpointError, match="no params.json: copy params.json"):
        checkpoint_files.find_checkpoint_dir(str(good_copy))


def test_default_is_the_embedded_checkpoint(clean_env):
    assert checkpoint_files.find_checkpoint_dir() == EMBEDDED
    assert checkpoint_files.find_checkpoint_dir("") == EMBEDDED


# ---- params.json ------------------------------------------------------------------------


def test_params_not_json(good_copy):
    (good_copy / "params.json").write_text('{"dim": 64,')
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        checkpoints.read_params(good_copy)


def test_params_not_an_object(good_copy):
    write_params(good_copy, [1, 2, 3])
    with pytest.raises(CheckpointError, match="holds a JSON list"):
        checkpoints.read_params(good_copy)


@pytest.mark.parametrize("key", sorted(checkpoint_checks.REQUIRED_PARAMS))
def test_params_missing_key(good_copy, key):
    params = params_of(good_copy)
    del params[key]
    write_params(good_copy, params)
    with pytest.raises(CheckpointError, match=f"has no '{key}'"):
        checkpoints.read_params(good_copy)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dim", "64", "dim is '64', it must be an integer"),
        ("n_heads", 4.0, "n_heads is 4.0, it must be an integer"),
        ("rope_theta", "500000", "rope_theta is '500000', it must be a number"),
        ("use_scaled_rope", "yes", "use_scaled_rope is 'yes', it must be true or false"),
        ("n_layers", -2, "n_layers is -2, it must be a positive integer"),
        ("dim", 0, "dim is 0, it must be a positive integer"),
        ("norm_eps", -1e-5, "norm_eps is -1e-05, it must be positive"),
        ("dim", 66, "dim 66 is not divisible by n_heads 4"),
        ("n_kv_heads", 3, "n_heads 4 is not divisible by n_kv_heads 3"),
    ],
)
def test_params_bad_values(good_copy, key, value, message):
    write_params(good_copy, params_of(good_copy) | {key: value})
    with pytest.raises(CheckpointError, match=message):
        checkpoints.read_params(good_copy)


# Llama 4 Scout's params.json keys beyond Llama 3's (fact, Meta's release; sizes cut down).
LLAMA4_PARAMS = {
    "vocab_size": 202048,
    "use_qk_norm": True,
    "nope_layer_interval": 4,
    "attention_chunk_size": 8192,
    "moe_args": {"num_experts": 16, "capacity_factor": 1.0, "top_k": 1},
}


@pytest.mark.parametrize("keys", [list(LLAMA4_PARAMS), ["moe_args"], ["use_qk_norm"]])
def test_a_llama4_params_json_is_one_sentence_naming_what_it_adds(good_copy, keys):
    write_params(good_copy, params_of(good_copy) | {key: LLAMA4_PARAMS[key] for key in keys})
    with pytest.raises(CheckpointError, match="is a Llama 4 model's: it adds ") as raised:
        checkpoints.open_checkpoint(good_copy)
    named = [what for key, what in release_facts.LLAMA4_PARAMS.items() if key in keys]
    assert f"adds {', '.join(named)}, which only the notebook's last section runs" in str(
        raised.value
    )
    assert str(raised.value).count(". ") == 0  # one sentence


def test_llama4_keys_switched_off_are_llama3s(good_copy):
    write_params(good_copy, params_of(good_copy) | {"use_qk_norm": False, "moe_args": None})
    assert checkpoints.open_checkpoint(good_copy).params.n_layers == 4


def llama4_params_copy(folder: Path, **changes) -> Path:
    """The tiny Llama 4's params.json with `changes` (None: the key removed), beside an empty
    consolidated.00.pth: enough for its sizes to be read and checked."""
    folder.mkdir()
    params = params_of(checkpoint_files.EMBEDDED_LLAMA4)
    for key, value in changes.items():
        inside = key.startswith("moe_args_")  # moe_args_top_k: moe_args's top_k
        where, key = (params["moe_args"], key[9:]) if inside else (params, key)
        where.pop(key) if value is None else where.__setitem__(key, value)
    write_params(folder, params)
    (folder / "consolidated.00.pth").touch()
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"moe_args_top_k": 5}, "moe_args.top_k is 5, more than its 4 experts"),
        ({"moe_args_num_experts": 0}, "moe_args.num_experts is 0, it must be a positive integer"),
        ({"moe_args": "16 experts"}, "moe_args is '16 experts', it must be an object"),
        ({"nope_layer_interval": 0}, "nope_layer_interval is 0, it must be a positive integer"),
        ({"use_qk_norm": "yes"}, "use_qk_norm is 'yes', it must be true or false"),
        ({"ffn_exp": None}, "a mixture of experts needs ffn_exp, which it does not state"),
        ({"attention_chunk_size": 8.5}, "attention_chunk_size is 8.5, it must be a positive"),
    ],
)
def test_bad_llama4_params_are_one_sentence(tmp_path, changes, message):
    folder = llama4_params_copy(tmp_path / "llama4", **changes)
    with pytest.raises(CheckpointError, match=message) as raised:
        checkpoints.read_params(folder, llama4=True)
    assert str(raised.value).count(". ") == 0  # one sentence


def test_llama4_keys_left_out_take_metas_defaults(tmp_path):
    folder = llama4_params_copy(tmp_path / "llama4", use_qk_norm=None, moe_args_top_k=None)
    params = model_sizes.filled(checkpoints.read_params(folder, llama4=True))
    assert params["use_qk_norm"] is False and params["moe_args"]["top_k"] == 1
    assert params["floor_scale"] == 8192.0 and params["moe_layers"] == (1, 3)
    assert params["nope_layers"] == (3,) and params["expert_hidden"] == 128


# ---- the tensors ------------------------------------------------------------------------


def resave(folder: Path, change) -> None:
    state_dict = {
        k: v.clone()
        for k, v in torch.load(folder / "consolidated.00.pth", weights_only=True).items()
    }
    change(state_dict)
    torch.save(state_dict, folder / "consolidated.00.pth")


def check(folder: Path) -> str:
    return checkpoints.open_checkpoint(folder).check()


def test_good_checkpoint_summary():
    assert check(EMBEDDED).startswith(
        "checkpoint ok: 4 layers, dim 64, 4 query heads sharing 2 key/value heads"
    )


def test_tensor_missing(good_copy):
    resave(good_copy, lambda sd: sd.pop("layers.3.feed_forward.w2.weight"))
    with pytest.raises(CheckpointError, match="has no tensor layers.3.feed_forward.w2.weight"):
        check(good_copy)


def test_unexpected_tensor(good_copy):
    resave(
        good_copy,
        lambda sd: sd.__setitem__("layers.0.attention.bias", torch.zeros(3, dtype=torch.bfloat16)),
    )
    with pytest.raises(CheckpointError, match="unexpected tensor layers.0.attention.bias"):
        check(good_copy)


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (  # params.json claims more layers than the file holds
            {"n_layers": 6},
            r"has no tensor layers.4.attention.wq.weight and 17 more: .*\(n_layers 6\)",
        ),
        (  # a shape disagrees with params.json
            {"n_kv_heads": 4},
            r"layers.0.attention.wk.weight has shape \[32, 64\] but params.json implies \[64, 64\]",
        ),
    ],
)
def test_params_that_disagree_with_the_tensors(good_copy, claim, message):
    write_params(good_copy, params_of(good_copy) | claim)
    with pytest.raises(CheckpointError, match=message):
        check(good_copy)


def test_wrong_dtype(good_copy):
    resave(good_copy, lambda sd: sd.__setitem__("norm.weight", sd["norm.weight"].to(torch.int8)))
    with pytest.raises(CheckpointError, match="norm.weight is torch.int8"):
        check(good_copy)


def test_truncated_file(good_copy):
    path = good_copy / "consolidated.00.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(
        CheckpointError, match="is not a readable PyTorch checkpoint .* download it again"
    ):
        checkpoints.open_checkpoint(good_copy)


def test_git_lfs_pointer_instead_of_the_weights(good_copy):
    path = good_copy / "consolidated.00.pth"
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:be52\nsize 16060617592\n"
    )
    with pytest.raises(
        CheckpointError,
        match=r"consolidated.00.pth is a Git LFS pointer, not the file itself \(run `git lfs pull`",
    ):
        checkpoints.open_checkpoint(good_copy)


def test_corrupt_file(good_copy):
    path = good_copy / "consolidated.00.pth"
    data = bytearray(path.read_bytes())
    data[len(data) - 200 :] = b"\xff" * 200  # the zip's central directory
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        checkpoints.open_checkpoint(good_copy)


def test_not_a_torch_file(good_copy):
    (good_copy / "consolidated.00.pth").write_text("<html>404 not found</html>")
    with pytest.raises(
        CheckpointError,
        match="consolidated.00.pth is an HTML page, not the file .* download the file itself",
    ):
        checkpoints.open_checkpoint(good_copy)


class RunsCode:
    """A pickle payload that would create a file when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(good_copy, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save(
        {"tok_embeddings.weight": torch.zeros(2, 2), "payload": RunsCode(marker)},
        good_copy / "consolidated.00.pth",
    )
    with pytest.raises(
        CheckpointError,
        match=r"pickled code .* loading refused \(weights_only=True\), nothing in it was run",
    ):
        checkpoints.open_checkpoint(good_copy)
    assert not marker.exists()


# ---- devices and dtypes -------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_gpu():
    with pytest.raises(
        SettingError,
        match="LLAMA3_DEVICE=cuda but this PyTorch sees no CUDA GPU: use LLAMA3_DEVICE=auto or cpu",
    ):
        run_settings.choose_device("cuda")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_requested_without_mps():
    with pytest.raises(SettingError, match="Apple's MPS is not available here"):
        run_settings.choose_device("mps")


def test_unknown_device_and_dtype():
    with pytest.raises(SettingError, match="is not a device name"):
        run_settings.choose_device("gpu")
    with pytest.raises(
        SettingError, match="LLAMA3_DTYPE='float8' is not supported: use auto, float32 or bfloat16"
    ):
        run_settings.choose_dtype("float8", torch.device("cpu"))


def test_auto_device_and_dtype():
    device = run_settings.choose_device("auto")
    native = device.type == "cuda" or (device.type == "cpu" and run_settings.cpu_has_native_bf16())
    dtype, reason = run_settings.choose_dtype("auto", device)
    if device.type != "mps":
        assert dtype == (torch.bfloat16 if native else torch.float32), reason
    assert reason.startswith("auto: ")


def test_auto_dtype_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert run_settings.choose_dtype("auto", cpu) == (
        torch.float32,
        "auto: this CPU has no AVX-512 BF16 or AMX, so bf16 would be emulated",
    )
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert run_settings.choose_dtype("auto", cpu)[0] == torch.bfloat16
    assert run_settings.choose_dtype("auto", torch.device("cuda"))[0] == torch.bfloat16
    assert run_settings.choose_dtype(" BF16 ", cpu) == (torch.bfloat16, "LLAMA3_DTYPE=bf16")
    assert run_settings.choose_dtype("float32", torch.device("cuda"))[0] == torch.float32


# ---- prompts -------------------------------------------------------------------------------


def test_prompt_longer_than_context():
    with pytest.raises(
        SettingError,
        match=r"The prompt is 8,193 tokens, longer than this model's context of 8,192: shorten "
        r"the prompt \(LLAMA3_PROMPT or LLAMA3_PROMPT_FILE\)\.$",
    ):
        run_settings.check_prompt("x", [1] * 8193, {"use_scaled_rope": False})
    run_settings.check_prompt("x", [1] * 8193, {"use_scaled_rope": True})  # 3.1+: 131,072


def test_prompt_the_walkthrough_cannot_hold():
    # the 8B's 32 heads on a 24 GB machine: 4,096 tokens fit, 6,000 do not, and the sentence
    # says how many would
    memory = 24 * 10**9
    run_settings.check_prompt_fits(4096, 32, memory)
    with pytest.raises(
        SettingError,
        match=r"^The prompt is 6,000 tokens: the walkthrough's layer cells compute every head's "
        r"scores at once, 18 GB for it, and this machine has 24 GB; shorten LLAMA3_PROMPT \(or "
        r"LLAMA3_PROMPT_FILE\) to at most 4,841 tokens \(the section \"Long inputs\" reads "
        r"longer text in blocks\)\.$",
    ):
        run_settings.check_prompt_fits(6000, 32, memory)
    run_settings.check_prompt_fits(4841, 32, memory)  # the length it names fits
    with pytest.raises(SettingError):
        run_settings.check_prompt_fits(4842, 32, memory)


def test_prompt_from_a_file(tmp_path):
    (tmp_path / "long.txt").write_bytes("первая строка\r\nsecond line\n".encode())
    read = run_settings.choose_prompt(None, str(tmp_path / "long.txt"))
    assert read == "первая строка\r\nsecond line\n"  # the whole text, each newline as written
    assert run_settings.choose_prompt("typed", "") == "typed"  # an empty setting is no file


@pytest.mark.parametrize(
    ("text", "file", "message"),
    [
        (None, "missing.txt", "LLAMA3_PROMPT_FILE='{}': there is no such file; give the path"),
        (None, ".", "LLAMA3_PROMPT_FILE='{}' is a folder: give the path of a text file in it."),
        (None, "latin1.txt", "LLAMA3_PROMPT_FILE='{}' is not UTF-8 text: save it as UTF-8"),
        ("typed", "long.txt", "LLAMA3_PROMPT and LLAMA3_PROMPT_FILE are both set: unset one"),
    ],
)
def test_bad_prompt_file_is_one_sentence(tmp_path, text, file, message):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "long.txt").write_text("a prompt")
    path = str(tmp_path / file)
    with pytest.raises(SettingError) as raised:
        run_settings.choose_prompt(text, path)
    assert str(raised.value).startswith(message.format(path)) and "\n" not in str(raised.value)


def test_a_prompt_file_past_any_context_or_not_a_file_is_refused_unread(tmp_path):
    # /dev/zero, or a file larger than any context reads, would be read whole into memory
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as sparse:  # 100 GB that take no disk
        sparse.truncate(100 * 2**30)
    with pytest.raises(SettingError, match=r"holds 107,374,182,400 bytes, more than any model"):
        run_settings.choose_prompt(None, str(huge))
    with pytest.raises(SettingError, match=r"'/dev/zero' is not a regular file \(a device"):
        run_settings.choose_prompt(None, "/dev/zero")
    largest = tmp_path / "largest.txt"
    largest.write_text("x" * run_settings.PROMPT_FILE_BYTES)  # the limit itself is read
    assert len(run_settings.choose_prompt(None, str(largest))) == run_settings.PROMPT_FILE_BYTES


def test_empty_prompt_is_explained(capsys):
    run_settings.check_prompt("", [128000], {})
    assert (
        "the prompt is empty, so the model sees only <|begin_of_text|>" in capsys.readouterr().out
    )


def test_spelled_special_token_is_text(capsys):
    run_settings.check_prompt("hi <|eot_id|> there", [128000, 6151, 83739], {})
    assert "spells <|eot_id|>; that is encoded as ordinary text" in capsys.readouterr().out


# ---- in the notebook ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "LLAMA3_CKPT",
            "/nowhere/llama3",
            "CheckpointError: Checkpoint folder /nowhere/llama3 does not exist: set LLAMA3_CKPT",
        ),
        ("LLAMA3_DTYPE", "float8", "SettingError: LLAMA3_DTYPE='float8' is not supported"),
        ("LLAMA3_EXTRAS", "maybe", "SettingError: LLAMA3_EXTRAS='maybe' is not understood"),
        (
            "LLAMA3_ONE_ROW",
            "fast",
            "SettingError: LLAMA3_ONE_ROW='fast' is not understood: use auto",
        ),
        (
            "LLAMA3_QUANTIZE",
            "int3",
            "SettingError: LLAMA3_QUANTIZE='int3' is not understood: use none, int8 (one scale "
            "per row) or int4 (one scale per 32 weights).",
        ),
        (
            "LLAMA3_PROMPT",
            "word " * 9000,
            "SettingError: The prompt is 9,002 tokens, longer than this model's context of 8,192",
        ),
        (
            "LLAMA3_PROMPT_FILE",
            "/nowhere/prompt.txt",
            "SettingError: LLAMA3_PROMPT_FILE='/nowhere/prompt.txt': there is no such file",
        ),
    ],
)
def test_bad_input_is_one_sentence_in_the_setup_cell(setting, value, message):
    # Every check runs in the setup cell, before any lesson: a reader never meets it mid-lesson.
    text = setup_cell_in_process({setting: value})
    assert text.startswith(message) and text.count("\n") == 1, text


@pytest.mark.slow
@pytest.mark.parametrize("case", ["dtype", "prompt file past the context"])
def test_in_jupyter_run_all_stops_at_the_setup_cell_with_one_line(case, tmp_path):
    long_prompt = tmp_path / "prompt.txt"
    long_prompt.write_text("word " * 9000, encoding="utf-8")
    setting, expected = {
        "dtype": (
            {"LLAMA3_DTYPE": "float8"},
            "SettingError: LLAMA3_DTYPE='float8' is not supported",
        ),
        "prompt file past the context": (
            {"LLAMA3_PROMPT_FILE": str(long_prompt)},
            "SettingError: The prompt is 9,002 tokens, longer than this model's context of 8,192",
        ),
    }[case]
    failing = setup_cell_failure(setting)
    assert failing.id == "prelims-code"
    assert [output.output_type for output in failing.outputs] == ["stream"]  # no traceback
    text = failing.outputs[0].text
    assert text.startswith(expected), text
    assert text.count("\n") == 1


def snapshot(folder: Path) -> dict:
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode))
        for p in folder.iterdir()
    }


@pytest.mark.slow
def test_read_only_checkpoint_works_and_is_untouched(good_copy, tmp_path):
    for path in [*good_copy.iterdir(), good_copy]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = snapshot(good_copy)
    try:
        # quantized too (tests/test_quantization.py): int8 matrices made from a folder that
        # cannot be written to, and nothing written beside it
        settings = {**TENSORS_ONLY, "LLAMA3_CKPT": str(good_copy), "LLAMA3_QUANTIZE": "int8"}
        result = run_and_read(tmp_path, settings)
        assert result["next_token_id"] == 2983
        assert "quantized:  int8, one scale per row, 29 matrices" in cell_text(
            result["notebook"], "prelims-code"
        )
        assert snapshot(good_copy) == before
    finally:
        for path in [good_copy, *good_copy.iterdir()]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_skipped_demos_say_why_once(clean_env, capsys, tokenizer):
    folder = checkpoint_files.EMBEDDED_CHECKPOINT
    params, weights = checkpoints.read_params(folder), checkpoints.open_checkpoint(folder).weights
    clean_env.setenv("LLAMA3_EXTRAS", "0")
    settings = run_settings.decide(folder, params, tokenizer, weights)
    assert settings.show_example(lambda: "ran") is None
    assert settings.show_example(lambda: "ran") is None
    assert capsys.readouterr().out == "skipped: LLAMA3_EXTRAS=0\nskipped, as above\n"
    clean_env.setenv("LLAMA3_EXTRAS", "1")
    assert (
        run_settings.decide(folder, params, tokenizer, weights).show_example(lambda: "ran") == "ran"
    )


def test_each_demo_gives_what_it_freed_back(clean_env, tokenizer, monkeypatch):
    # glibc keeps freed heap for later: trimmed after each demo, the next one starts low
    folder = checkpoint_files.EMBEDDED_CHECKPOINT
    params, weights = checkpoints.read_params(folder), checkpoints.open_checkpoint(folder).weights
    clean_env.setenv("LLAMA3_EXTRAS", "1")
    settings = run_settings.decide(folder, params, tokenizer, weights)
    trimmed = []
    monkeypatch.setattr(run_settings.quantization, "return_freed_memory", lambda: trimmed.append(1))
    assert settings.show_example(lambda: "ran") == "ran" and trimmed == [1]

    def failing():
        raise ValueError("a demo that stops")

    with pytest.raises(ValueError):
        settings.show_example(failing)
    assert trimmed == [1, 1]


def test_training_every_weight_is_skipped_where_its_copy_cannot_fit(
    clean_env, capsys, tokenizer, monkeypatch
):
    # 16 bytes a weight (value, gradient, Adam's two moments): the 8B's 8.03B need 128 GB
    memory = type("Memory", (), {"total": 16 * 2**30})  # a 16 GB laptop
    monkeypatch.setattr(run_settings.psutil, "virtual_memory", lambda: memory)
    cpu = torch.device("cpu")
    reason = run_settings.choose_full_training(8_030_261_248, cpu)
    assert "128 GB for this model" in reason and "17 GB" in reason and "LoRA" in reason
    assert run_settings.choose_full_training(16_638_528, cpu) is None  # the embedded model
    folder = checkpoint_files.EMBEDDED_CHECKPOINT
    params, weights = checkpoints.read_params(folder), checkpoints.open_checkpoint(folder).weights
    settings = run_settings.decide(folder, params, tokenizer, weights)
    assert settings.show_full_training(lambda: "ran") == "ran"
    settings.full_training_reason = reason
    assert settings.show_full_training(lambda: "ran") is None
    assert settings.show_full_training(lambda: "ran") is None
    assert settings.show_example(lambda: "ran") == "ran"  # the other demos still run
    assert capsys.readouterr().out == f"skipped: {reason}\nskipped, as above\n"
