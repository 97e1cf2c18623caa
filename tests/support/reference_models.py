"""Independent Llama 3 implementations to check the notebook against — plumbing only.

Two references, both loaded from the same Meta-layout checkpoint the notebook reads:

* Hugging Face transformers' `LlamaForCausalLM`, built by testbeds/transformers_llama.py.
  HF stores each head's q/k rows in a different order (RoPE pairs half a head apart instead
  of adjacent), so the Meta rows are permuted on the way in — the same conversion as HF's
  own Meta→HF converter.
* Meta's reference `Transformer` from the `llama-models` package
  (`llama_models/llama3/model.py`), which needs fairscale and a one-process
  torch.distributed group with model parallelism of size 1.

Both return the same named tensors the notebook keeps: the token embeddings, the
residual stream after every layer's attention and feed-forward network, the final
norm output and the logits. Nothing here computes any part of the model itself; the
intermediate tensors are read with forward hooks.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import fairscale.nn.model_parallel.initialize as fs_init
import torch
import torch.distributed as dist
from llama_models.llama3.args import ModelArgs
from llama_models.llama3.model import Transformer
from llama_models.llama4.args import ModelArgs as Llama4Args
from llama_models.llama4.datatypes import TransformerInput as Llama4Input
from llama_models.llama4.model import Transformer as Llama4Transformer

# The Hugging Face reference and its conversions are testbeds' (non-test code builds the same
# model to save Hugging Face folders); named here too, as the references' other half.
from testbeds.transformers_llama import HF_LAYER_KEYS as HF_LAYER_KEYS
from testbeds.transformers_llama import hf_config as hf_config
from testbeds.transformers_llama import hf_model as hf_model
from testbeds.transformers_llama import hf_rope_scaling as hf_rope_scaling
from testbeds.transformers_llama import load_meta_checkpoint
from testbeds.transformers_llama import meta_rows_to_hf as meta_rows_to_hf

# float32, against either reference: max|ours − ref| / max|ref| for every compared tensor.
# All compute in float32 and differ only in the order of sums (batched vs per-head products,
# cos/sin vs complex RoPE): float32 rounding, ~6e-8 relative per operation, compounds to
# about 1e-6 here (measured), so 1e-4 leaves room for other CPUs and BLAS libraries, while
# any real mistake (a wrong RoPE pair or kv head, a missing residual or norm weight) moves
# these tensors by 1e-2 or more (tools/check_mutations.py).
FP32_TOLERANCE = 1e-4


def hf_tensors(model, tokens: list[int]) -> dict:
    """Run HF's forward pass and collect the notebook's named tensors with hooks."""
    layers = model.model.layers
    after_attention: list[torch.Tensor] = [None] * len(layers)
    after_ffn: list[torch.Tensor] = [None] * len(layers)
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.model.embed_tokens.register_forward_hook(
            lambda m, i, o: captured.__setitem__("token_embeddings", o[0])
        ),
        model.model.norm.register_forward_hook(
            lambda m, i, o: captured.__setitem__("final_normed", o[0])
        ),
    ]
    for index, layer in enumerate(layers):
        # The second norm's input is the residual stream after attention; the layer's output is the
        # stream after the FFN.
        handles.append(
            layer.post_attention_layernorm.register_forward_pre_hook(
                lambda m, args, i=index: after_attention.__setitem__(i, args[0][0])
            )
        )
        handles.append(
            layer.register_forward_hook(
                lambda m, args, out, i=index: after_ffn.__setitem__(
                    i, (out[0] if isinstance(out, tuple) else out)[0]
                )
            )
        )
    try:
        with torch.no_grad():
            logits = model(torch.tensor([tokens]), use_cache=False).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    return _as_float(captured, after_attention, after_ffn, logits)


_distributed_ready = False


def _init_model_parallel() -> None:
    """Meta's reference needs a torch.distributed group and fairscale's model parallel state."""
    global _distributed_ready
    if _distributed_ready:
        return
    if not dist.is_initialized():
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(port))
        dist.init_process_group("gloo", rank=0, world_size=1)
    if not fs_init.model_parallel_is_initialized():
        fs_init.initialize_model_parallel(1)
    _distributed_ready = True


def meta_model(
    checkpoint_dir: Path, params: dict, dtype: torch.dtype = torch.float32, max_seq_len: int = 1024
):
    """Meta's reference Transformer (llama-models) holding the checkpoint's weights.

    Its scaled RoPE always uses factor 8 (hard-coded in llama_models/llama3/model.py), so
    it is a reference for Llama 3.1/3.3-style scaling only. It has no tied-output mode:
    a checkpoint without output.weight gets the embedding table in that slot, which is
    what tying means.
    """
    _init_model_parallel()
    state_dict = load_meta_checkpoint(checkpoint_dir)
    args = ModelArgs(**params, max_batch_size=1, max_seq_len=max_seq_len)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = Transformer(args)
    finally:
        torch.set_default_dtype(previous)
    tensors = {name: state_dict[name].to(dtype) for name in state_dict}
    tensors.setdefault("output.weight", tensors["tok_embeddings.weight"])
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def meta_tensors(model, tokens: list[int], run=None) -> dict:
    """Run Meta's forward pass and collect the notebook's named tensors with hooks. `run(model,
    batch)` gives the last position's logits (default: Llama 3's `model(batch, start_pos=0)`)."""
    after_attention: list[torch.Tensor] = [None] * len(model.layers)
    after_ffn: list[torch.Tensor] = [None] * len(model.layers)
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.tok_embeddings.register_forward_hook(
            lambda m, i, o: captured.__setitem__("token_embeddings", o[0])
        ),
        model.norm.register_forward_hook(
            lambda m, i, o: captured.__setitem__("final_normed", o[0])
        ),
    ]
    for index, layer in enumerate(model.layers):
        handles.append(
            layer.ffn_norm.register_forward_pre_hook(
                lambda m, args, i=index: after_attention.__setitem__(i, args[0][0])
            )
        )
        handles.append(
            layer.register_forward_hook(
                lambda m, args, out, i=index: after_ffn.__setitem__(i, out[0])
            )
        )
    run = run or (lambda model, batch: model(batch, start_pos=0)[0, -1])
    try:
        with torch.no_grad():
            logits = run(model, torch.tensor([tokens]))
    finally:
        for handle in handles:
            handle.remove()
    return _as_float(captured, after_attention, after_ffn, logits)


def _as_float(captured, after_attention, after_ffn, logits) -> dict:
    return {
        "token_embeddings": captured["token_embeddings"].float(),
        "residual_after_attention": [t.float() for t in after_attention],
        "residual_after_ffn": [t.float() for t in after_ffn],
        "final_normed": captured["final_normed"].float(),
        "logits": logits.float(),
    }


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours − reference| / max |reference|: one number per tensor, scale-free."""
    return float(
        (ours.float() - reference.float()).abs().max()
        / reference.float().abs().max().clamp_min(1e-30)
    )


def layer_differences(ours: dict, reference: dict) -> dict[str, float]:
    """relative_difference of every tensor the notebook and a reference both name, layer by layer.

    A run through the notebook's `forward` (notebook_values.other_prompts) has the final norm's
    output at the last position only, and is compared there.
    """
    result = {
        name: relative_difference(ours[name], reference[name])
        for name in ("token_embeddings", "logits")
    }
    if "final_normed_last" in ours:
        result["final_normed_last"] = relative_difference(
            ours["final_normed_last"], reference["final_normed"][-1]
        )
    else:
        result["final_normed"] = relative_difference(
            ours["final_normed"], reference["final_normed"]
        )
    for stage in ("residual_after_attention", "residual_after_ffn"):
        assert len(ours[stage]) == len(reference[stage]), stage
        for layer, (mine, theirs) in enumerate(zip(ours[stage], reference[stage], strict=True)):
            result[f"{stage}[{layer}]"] = relative_difference(mine, theirs)
    return result


def llama4_meta_model(params: dict, state_dict: dict, max_seq_len: int = 1024):
    """Meta's reference Llama 4 text model (llama_models/llama4/model.py) on the CPU, in float32,
    holding `state_dict` (Meta's names). Its attention allocates its cache with `.cuda()`; that
    call is made a no-op while the model is built, and nothing else of it is changed."""
    _init_model_parallel()
    args = Llama4Args(**params, max_batch_size=1, max_seq_len=max_seq_len)
    previous, cuda = torch.get_default_dtype(), torch.Tensor.cuda
    torch.set_default_dtype(torch.float32)
    torch.Tensor.cuda = lambda tensor, *args, **kwargs: tensor
    try:
        model = Llama4Transformer(args)
    finally:
        torch.set_default_dtype(previous)
        torch.Tensor.cuda = cuda
    model.load_state_dict({name: t.float() for name, t in state_dict.items()}, strict=True)
    return model.eval()


def llama4_meta_tensors(model, tokens: list[int]) -> dict:
    """Meta's Llama 4 forward pass, its named tensors collected as meta_tensors collects them."""

    def run(model, batch):
        return model(Llama4Input(tokens=batch, tokens_position=0)).logits[0, -1]

    return meta_tensors(model, tokens, run)
