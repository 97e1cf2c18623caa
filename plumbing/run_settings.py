"""Every decision about the run, made once from the environment — plumbing only.

The notebook's setup cell calls `decide(checkpoint_dir, params, tokenizer, weights)`, which reads
the LLAMA3_* variables (the table is in the README), checks them, and returns a `Settings`
that says which device and dtype compute, whether weights are streamed, whether the
expensive demos run, and which prompt to complete (checked against the model's context).
The lessons below it contain no such `if`s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from plumbing import (
    checkpoint_files,
    one_row,
    quantization,
    release_facts,
    settings,
    tables,
    tensor_names,
    weight_loading,
)
from plumbing.friendly_errors import SetupError

DEFAULT_PROMPT = "the answer to the ultimate question of life, the universe, and everything is "
# Long inputs. Past KEY_BLOCK keys, the notebook's attention reads the keys that many at a time
# (attention_in_blocks: one block's scores, [n_heads × new × KEY_BLOCK], never all of them), and
# generate feeds a prompt through the layers PREFILL_CHUNK positions at a time, filling the
# cache. On the 8B, one block's float32 scores for a full chunk are 32 × 1024 × 1024 × 4 bytes,
# 128 MB: memory that no longer grows with the prompt.
KEY_BLOCK = 1024
PREFILL_CHUNK = 1024

# Every LLAMA3_* variable, with its default as the README's table gives it: plumbing/settings.py.
SETTINGS = settings.SETTINGS

# Above this many parameters, on the CPU, the demos that make extra passes over every
# weight (more prompts, generation, the logit lens) are skipped unless LLAMA3_EXTRAS=1.
EXAMPLES_CPU_LIMIT = 1e9


class SettingError(SetupError):
    """A LLAMA3_* variable has a value this notebook does not understand."""


def choose_device(name: str | None = None) -> torch.device:
    """LLAMA3_DEVICE: auto (cuda, then mps, then cpu), or a device name that must exist."""
    if name is None:
        name = settings.read().get("LLAMA3_DEVICE")
    name = name.strip().lower() or "auto"
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingError(
            f"LLAMA3_DEVICE={name!r} is not a device name: use auto, cpu, cuda, cuda:1 or mps."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(
            f"LLAMA3_DEVICE={name} but this PyTorch sees no CUDA GPU: use LLAMA3_DEVICE=auto or "
            "cpu (or install a CUDA build of PyTorch)."
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise SettingError(
            f"LLAMA3_DEVICE={name} but only {torch.cuda.device_count()} CUDA GPU(s) exist: use "
            f"cuda:0 … cuda:{torch.cuda.device_count() - 1}."
        )
    if device.type == "mps" and not mps_ok:
        raise SettingError(
            f"LLAMA3_DEVICE={name} but Apple's MPS is not available here: use LLAMA3_DEVICE=auto "
            "or cpu."
        )
    if device.type not in ("cpu", "cuda", "mps"):
        raise SettingError(
            f"LLAMA3_DEVICE={name} is not supported by this notebook: use auto, cpu, cuda or mps."
        )
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: AVX-512 BF16 or AMX (x86)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def choose_dtype(name: str | None, device: torch.device) -> tuple[torch.dtype, str]:
    """LLAMA3_DTYPE: float32, bfloat16, or auto; returns the dtype and why, in a few words.

    auto (the figures: docs/performance.md#number-formats-on-the-cpu): the weights are
    bfloat16 on disk.
    - A CPU with AVX-512 BF16 or AMX multiplies bf16 matrices several times faster than
      float32 and converts nothing: bfloat16.
    - Any other CPU (AVX2) emulates bf16 products, several times slower than float32 once a pass
      has more than a few dozen tokens: float32, each weight converted when used.
    - CUDA: bfloat16, native on every GPU this notebook targets.
    - Apple's MPS (reasoned, not measured here): bfloat16 on macOS 14 or newer, which runs
      it natively and where it halves the unified memory the weights take; float32 before.
    RMSNorm statistics, RoPE and softmax are float32 in every mode.
    """
    if name is None:
        name = settings.read().get("LLAMA3_DTYPE")
    name = name.strip().lower() or "auto"
    choices = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if name in choices:
        return choices[name], f"LLAMA3_DTYPE={name}"
    if name != "auto":
        raise SettingError(
            f"LLAMA3_DTYPE={name!r} is not supported: use auto, float32 or bfloat16."
        )
    if device.type == "cuda":
        return torch.bfloat16, "auto: GPUs multiply bf16 natively"
    if device.type == "mps":
        if torch.backends.mps.is_macos_or_newer(14, 0):
            return torch.bfloat16, "auto: MPS runs bf16 on macOS 14+"
        return torch.float32, "auto: MPS before macOS 14 has no bf16"
    if cpu_has_native_bf16():
        return torch.bfloat16, "auto: this CPU multiplies bf16 natively (AVX-512 BF16 / AMX)"
    return torch.float32, "auto: this CPU has no AVX-512 BF16 or AMX, so bf16 would be emulated"


def choose_streaming(value: str | None, device: torch.device) -> bool:
    """LLAMA3_STREAM: whether each weight is read from the file whenever it is used.

    auto: yes on the CPU (the memory-mapped file is already in RAM, as page cache, and
    keeping converted copies would double it); no on a GPU (copy each weight once). On a
    GPU with less memory than the model, LLAMA3_STREAM=1 runs it one weight at a time.
    """
    if value is None:
        value = settings.read().get("LLAMA3_STREAM")
    value = value.strip().lower() or "auto"
    if value == "auto":
        return device.type == "cpu"
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise SettingError(
        f"LLAMA3_STREAM={value!r} is not understood: use auto, 1 (stream weights from the file) "
        "or 0 (keep them on the device)."
    )


def choose_one_row(value: str | None = None) -> str:
    """LLAMA3_ONE_ROW: auto (the default), fused or plain — how one-row products read a bf16
    file when computing in float32, and which kernel a one-row bf16 product runs on a CPU
    with native bf16 (plumbing/one_row.py)."""
    if value is None:
        value = settings.read().get("LLAMA3_ONE_ROW")
    value = value.strip().lower() or "auto"
    if value not in one_row.CHOICES:
        raise SettingError(
            f"LLAMA3_ONE_ROW={value!r} is not understood: use auto, fused (one-row products "
            "read the file's bf16 through a compiled loop) or plain (convert, then multiply)."
        )
    return value


def choose_quantization(value: str | None = None) -> str:
    """LLAMA3_QUANTIZE: none (the default), int8 or int4 — the matrices every step reads whole.

    int8 keeps one scale per row, int4 one per 32 weights (plumbing/quantization.py; the
    notebook's section "Fewer bytes per weight" builds both and checks them).
    """
    if value is None:
        value = settings.read().get("LLAMA3_QUANTIZE")
    value = value.strip().lower() or "none"
    if value in ("none", "0", "no", "off"):
        return "none"
    if value in quantization.SCHEMES:
        return value
    raise SettingError(
        f"LLAMA3_QUANTIZE={value!r} is not understood: use none, int8 (one scale per row) or "
        "int4 (one scale per 32 weights)."
    )


def choose_examples(value: str | None, n_parameters: int, device: torch.device) -> tuple[bool, str]:
    """LLAMA3_EXTRAS: whether the demos that make extra passes over every weight run, and why."""
    if value is None:
        value = settings.read().get("LLAMA3_EXTRAS")
    value = value.strip().lower()
    if value in ("1", "true", "yes"):
        return True, "LLAMA3_EXTRAS=1"
    if value in ("0", "false", "no"):
        return False, "LLAMA3_EXTRAS=0"
    if value:
        raise SettingError(
            f"LLAMA3_EXTRAS={value!r} is not understood: use 1 (run the extra demos), 0 (skip "
            "them), or unset it."
        )
    if device.type != "cpu":
        return True, f"on {device.type}, each extra pass is quick"
    if n_parameters < EXAMPLES_CPU_LIMIT:
        return True, f"{n_parameters / 1e9:.2f}B parameters: each extra pass is quick on the CPU"
    return (
        False,
        f"{n_parameters / 1e9:.1f}B parameters on the CPU: each is another pass over every weight "
        "(LLAMA3_EXTRAS=1 runs them)",
    )


# Full fine-tuning with Adam holds, per weight, its float32 value, its gradient and Adam's two
# running moments: 4 numbers of 4 bytes.
FULL_TRAINING_BYTES_PER_WEIGHT = 16


def device_memory(device: torch.device) -> int:
    """Bytes of memory the device computes in: a GPU's own, else the machine's."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return psutil.virtual_memory().total  # the CPU, or Apple's GPU, which shares it


# The walkthrough's layer cells (layer 0, one head at a time, then every layer with every head)
# compute attention at once: each head's [tokens × tokens] scores, masked, their float32 softmax
# and its copy in the compute dtype, up to this many bytes per score at a time.
WALKTHROUGH_BYTES_PER_SCORE = 16


def check_prompt_fits(n_tokens: int, n_heads: int, memory: int) -> None:
    """Refuse a prompt whose attention at once, in the walkthrough's layer cells, would take
    more than half the memory (`forward` and `generate` read long inputs in blocks)."""
    needed = WALKTHROUGH_BYTES_PER_SCORE * n_heads * n_tokens**2
    if needed <= memory / 2:
        return
    longest = math.isqrt(int(memory / 2 / (WALKTHROUGH_BYTES_PER_SCORE * n_heads)))
    raise SettingError(
        f"The prompt is {n_tokens:,} tokens: the walkthrough's layer cells compute every head's "
        f"scores at once, {needed / 1e9:.0f} GB for it, and this machine has "
        f"{memory / 1e9:.0f} GB; shorten LLAMA3_PROMPT (or LLAMA3_PROMPT_FILE) to at most "
        f'{longest:,} tokens (the section "Long inputs" reads longer text in blocks).'
    )


def choose_full_training(n_parameters: int, device: torch.device) -> str | None:
    """Why the demos that train a float32 copy of every weight cannot run here (None: they can).

    They need FULL_TRAINING_BYTES_PER_WEIGHT bytes per weight, on the device; LoRA, taught
    after them, needs a small fraction of that and runs at any size.
    """
    available = device_memory(device)
    needed = FULL_TRAINING_BYTES_PER_WEIGHT * n_parameters
    if needed <= 0.75 * available:  # room for the activations, the file's pages, the rest
        return None
    return (
        f"a copy of every weight to train needs {FULL_TRAINING_BYTES_PER_WEIGHT} bytes per "
        f"weight (float32 value, gradient and Adam's two moments), {needed / 1e9:.0f} GB for "
        f"this model, and this {device.type} has {available / 1e9:.0f} GB; LoRA, below, trains "
        "in little memory"
    )


def choose_rope_scale_factor(params: dict, value: str | None = None) -> tuple[float | None, str]:
    """The scaled-RoPE factor: LLAMA3_ROPE_SCALE_FACTOR if set, else config.json's, else the release
    rule."""
    if not params.get("use_scaled_rope"):
        return release_facts.rope_scale_factor(params)
    if value is None:
        value = settings.read().get("LLAMA3_ROPE_SCALE_FACTOR")
    if value.strip():
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not factor > 0:
            raise SettingError(
                f"LLAMA3_ROPE_SCALE_FACTOR={value!r} is not a positive number: use 8 (Llama "
                "3.1/3.3) or 32 (Llama 3.2), or unset it."
            )
        return factor, f"LLAMA3_ROPE_SCALE_FACTOR={value}"
    if "rope_scaling" in params:  # a Hugging Face config.json states it
        stated = params["rope_scaling"]
        return float(stated["factor"]), f"stated in {stated.get('stated_in', 'config.json')}"
    factor, reason = release_facts.rope_scale_factor(params)
    return factor, f"{reason} (LLAMA3_ROPE_SCALE_FACTOR overrides it)"


def rope_frequency_band(params: dict) -> tuple[float, float, int]:
    """Scaled RoPE's low/high frequency factors and original context: config.json's, else Meta's."""
    stated = params.get("rope_scaling")
    if stated:
        return (
            float(stated["low_freq_factor"]),
            float(stated["high_freq_factor"]),
            int(stated["original_max_position_embeddings"]),
        )
    return (
        release_facts.ROPE_LOW_FREQ_FACTOR,
        release_facts.ROPE_HIGH_FREQ_FACTOR,
        release_facts.ROPE_ORIGINAL_CONTEXT,
    )


# The largest prompt file read: Llama 3.1's 131,072 positions times 128 bytes, the longest
# token of Llama 3's vocabulary, so no text that fits a context is refused (a larger file is
# refused before it is read, and a device such as /dev/zero is never read).
PROMPT_FILE_BYTES = 131_072 * 128


def choose_prompt(text: str | None = None, file: str | None = None) -> str:
    """The prompt: LLAMA3_PROMPT's text, or the UTF-8 text of the file LLAMA3_PROMPT_FILE names,
    else the Hitchhiker's question."""
    text = settings.read().get("LLAMA3_PROMPT") if text is None else text
    file = settings.read().get("LLAMA3_PROMPT_FILE") if file is None else file
    if not file:
        return DEFAULT_PROMPT if text is None else text
    if text is not None:
        raise SettingError("LLAMA3_PROMPT and LLAMA3_PROMPT_FILE are both set: unset one of them.")
    path = Path(file).expanduser()
    try:
        if path.exists() and not path.is_dir():  # checked before a byte is read
            if not path.is_file():
                raise SettingError(
                    f"LLAMA3_PROMPT_FILE={file!r} is not a regular file (a device or a pipe): "
                    "give the path of a text file."
                )
            if (size := path.stat().st_size) > PROMPT_FILE_BYTES:
                raise SettingError(
                    f"LLAMA3_PROMPT_FILE={file!r} holds {size:,} bytes, more than any model's "
                    f"context reads ({PROMPT_FILE_BYTES:,} at most): give a shorter file."
                )
        return path.read_bytes().decode("utf-8")  # exactly: "\r\n" stays (read_text drops "\r")
    except FileNotFoundError:
        raise SettingError(
            f"LLAMA3_PROMPT_FILE={file!r}: there is no such file; give the path of a text file."
        ) from None
    except IsADirectoryError:
        raise SettingError(
            f"LLAMA3_PROMPT_FILE={file!r} is a folder: give the path of a text file in it."
        ) from None
    except UnicodeDecodeError:
        raise SettingError(
            f"LLAMA3_PROMPT_FILE={file!r} is not UTF-8 text: save it as UTF-8 and try again."
        ) from None
    except OSError as error:
        raise SettingError(
            f"LLAMA3_PROMPT_FILE={file!r} cannot be read ({error.strerror}): check its permissions."
        ) from None


def check_prompt(prompt: str, tokens: list[int], params: dict) -> None:
    """Refuse a prompt longer than the context; say what an empty or special-looking prompt
    means."""
    limit = release_facts.context_length(params)
    if len(tokens) > limit:
        raise SettingError(
            f"The prompt is {len(tokens):,} tokens, longer than this model's context of "
            f"{limit:,}: shorten the prompt (LLAMA3_PROMPT or LLAMA3_PROMPT_FILE)."
        )
    if not tokens:
        raise SettingError(
            "The prompt is empty, and this model's vocabulary has no token that begins a text "
            "(Qwen3's has none), so there is nothing to predict from: give LLAMA3_PROMPT some text."
        )
    if not prompt:
        print(
            "note: the prompt is empty, so the model sees only <|begin_of_text|> and predicts how "
            "a text starts."
        )
    spelled = sorted(set(re.findall(r"<\|[A-Za-z0-9_]+\|>", prompt)))
    if spelled:
        print(
            f"note: the prompt spells {', '.join(spelled)}; that is encoded as ordinary text, not "
            "as special tokens."
        )


@dataclass
class Settings:
    """What `decide` chose; `summary()` says it in a few lines, `details()` the rest."""

    checkpoint_dir: Path
    n_parameters: int
    prompt: str
    device: torch.device
    dtype: torch.dtype
    dtype_reason: str
    streaming: bool
    run_examples: bool
    examples_reason: str
    rope_scale_factor: float | None
    rope_scale_reason: str
    rope_frequency_band: tuple[float, float, int]
    quantization: str = "none"
    quantization_note: str = "none (LLAMA3_QUANTIZE=int8 or int4 quantizes the matrices)"
    one_row: str | None = None  # plumbing/one_row.py's route: "fused", "aten", "aten?" or None
    one_row_note: str = "plain"
    context_length: int = release_facts.CONTEXT_LLAMA3
    key_block: int = KEY_BLOCK
    prefill_chunk: int = PREFILL_CHUNK
    full_training_reason: str | None = None  # why a full float32 copy cannot be trained here
    said_why: bool = False  # whether a skipped demo has printed examples_reason yet
    said_why_not_full: bool = False  # … and full_training_reason
    plain_reader: weight_loading.WeightReader | None = None  # weight_reader's, unquantized
    llama4_dir: Path = checkpoint_files.EMBEDDED_LLAMA4  # the last section's Llama 4

    def summary(self) -> str:
        size = (
            f"{self.n_parameters / 1e9:.1f}B"
            if self.n_parameters >= 1e9
            else f"{self.n_parameters / 1e6:.1f}M"
        )
        weights = (
            "read from the memory-mapped file whenever a cell uses them"
            if self.streaming
            else f"copied to {self.device} once, at first use"
        )
        llama4 = []
        if self.llama4_dir != checkpoint_files.EMBEDDED_LLAMA4:  # LLAMA3_CKPT named a Llama 4
            where = checkpoint_files.describe(self.llama4_dir)
            llama4 = [f"llama 4:    {where}, run by the last section (the lesson: Llama 3)"]
        return "\n".join(
            [
                f"checkpoint: {checkpoint_files.describe(self.checkpoint_dir)} ({size} parameters)",
                *llama4,
                f"prompt:     {tables.elided(self.prompt)}",
                f"device:     {self.device}, computing in "
                f"{str(self.dtype).removeprefix('torch.')} ({self.dtype_reason})",
                f"weights:    {weights}",
                f"quantized:  {self.quantization_note}",
                f"examples:   {'run' if self.run_examples else 'skipped'} ({self.examples_reason})",
            ]
        )

    def details(self) -> str:
        """What the setup decided that the walkthrough to the answer does not use."""
        return "\n".join(
            [
                f"one row:    {self.one_row_note}",
                f"long input: context {self.context_length:,} positions; keys "
                f"{self.key_block:,} at a time past {self.key_block:,}; a prompt fed "
                f"{self.prefill_chunk:,} positions at a time",
                f"training:   {self.full_training_reason or 'a float32 copy of every weight fits'}",
            ]
        )

    def weight_reader(self, weights: Mapping[str, torch.Tensor]) -> weight_loading.Weights:
        """`weight(name)`, as weight_loading.reader_for builds it from these choices; the
        summary then says what the one-row route and quantization came to."""
        built = weight_loading.reader_for(
            weights,
            self.device,
            self.dtype,
            self.streaming,
            self.one_row,
            self.one_row_note,
            self.quantization,
        )
        self.one_row, self.one_row_note = built.one_row, built.one_row_note
        self.plain_reader = built.plain
        self.quantization_note = built.quantization_note or self.quantization_note
        return built.weight

    def plain_weight_reader(self, weights: Mapping[str, torch.Tensor]) -> weight_loading.Weights:
        """`weight(name)` for another checkpoint (the Llama 4 section's): on the device, in the
        dtype, with neither the one-row route nor a quantization scheme."""
        reader = weight_loading.WeightReader(weights, self.device, self.dtype, self.streaming)
        return weight_loading.Weights(reader)

    def float32_reader(self, weights: Mapping[str, torch.Tensor]) -> weight_loading.WeightReader:
        """The checkpoint's tensors in float32, as training reads them (weight_loading)."""
        return weight_loading.float32_reader(
            weights, self.plain_reader, self.device, self.streaming
        )

    def show_example(self, demo):
        """Run `demo()` and return its result — unless the expensive demos are off for this run.

        A skipped demo says why the first time, and "skipped, as above" after that.
        """
        if self.run_examples:  # what the demo frees goes back to the system as it runs
            with quantization.freed_memory_returned():
                return demo()
        print("skipped, as above" if self.said_why else f"skipped: {self.examples_reason}")
        self.said_why = True
        return None

    def show_full_training(self, demo):
        """show_example for the demos that train (or take gradients of) a float32 copy of every
        weight: skipped, too, where that copy does not fit (full_training_reason)."""
        if self.full_training_reason is None or not self.run_examples:
            return self.show_example(demo)
        said = "skipped, as above" if self.said_why_not_full else "skipped: "
        print(said + ("" if self.said_why_not_full else self.full_training_reason))
        self.said_why_not_full = True
        return None


def decide(
    checkpoint_dir: Path,
    params: dict,
    tokenizer,
    weights: Mapping[str, torch.Tensor],
    llama4_dir: Path = checkpoint_files.EMBEDDED_LLAMA4,
) -> Settings:
    """Read and check every LLAMA3_* setting once (the notebook prints the summary).

    The prompt is tokenized here too, only to check its length against the model's context
    before any lesson runs; notes about an empty prompt or spelled special tokens print here.
    The parameter count is of the tensors the checkpoint holds (a tied output matrix once).
    """
    prompt = tokenizer.normalize(choose_prompt())  # in NFC where the vocabulary reads that
    tokens = tokenizer.begin_of_text + tokenizer.encode(prompt, disallowed_special=())
    check_prompt(prompt, tokens, params)
    device = choose_device()
    check_prompt_fits(len(tokens), params["n_heads"], device_memory(device))
    dtype, dtype_reason = choose_dtype(None, device)
    n_parameters = sum(math.prod(shape) for shape in tensor_names.tensor_shapes(weights).values())
    run_examples, examples_reason = choose_examples(None, n_parameters, device)
    factor, factor_reason = choose_rope_scale_factor(params)
    streaming, quantized = choose_streaming(None, device), choose_quantization()
    shapes, dtypes = tensor_names.tensor_shapes(weights), tensor_names.tensor_dtypes(weights)
    file_dtypes = {dtypes[name] for name, shape in shapes.items() if len(shape) == 2}
    route, why = one_row.decide(
        choose_one_row(),
        n_parameters,
        device.type == "cpu" and cpu_has_native_bf16(),
        device,
        dtype,
        file_dtypes,
        streaming,
        quantized != "none",
    )
    return Settings(
        checkpoint_dir=checkpoint_dir,
        n_parameters=n_parameters,
        prompt=prompt,
        device=device,
        dtype=dtype,
        dtype_reason=dtype_reason,
        streaming=streaming,
        run_examples=run_examples,
        examples_reason=examples_reason,
        full_training_reason=choose_full_training(n_parameters, device),
        rope_scale_factor=factor,
        rope_scale_reason=factor_reason,
        rope_frequency_band=rope_frequency_band(params),
        context_length=release_facts.context_length(params),  # stated, else by release
        quantization=quantized,
        one_row=route,
        one_row_note=why if route else f"plain ({why})",
        llama4_dir=Path(llama4_dir),
    )
