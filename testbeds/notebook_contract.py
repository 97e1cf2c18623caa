"""The notebook's contract: the global names tests and benchmarks may read from its kernel.

The notebook is the implementation; tests and benchmarks execute it unchanged, then read its
own objects from its kernel (testbeds/notebook_kernel.py). These are the only names they read,
each with what it holds. tests/test_notebook_contract.py checks, without a kernel, that the
notebook's code cells define every one of them at top level; in a kernel, code reads them
through `NotebookGlobals`, so a name the notebook no longer defines fails as one sentence that
names this file, not as a KeyError deep inside a kernel.

Renaming one of these in the notebook means renaming it here and where it is read
(tests/support/kernel_readers.py, benchmarks/kernel_figures.py).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

CONTRACT = {
    # the setup cell's decisions
    "settings": "run_settings.decide's result: every decision about the run, once",
    "checkpoint_dir": "the checkpoint folder (or GGUF file) the run reads",
    "checkpoint": "checkpoints.open_checkpoint's result: layout, stated and filled params, weights",
    "config": "the checkpoint's params, defaults filled in (n_kv_heads, ffn_hidden, tied_output)",
    "model": "the checkpoint's tensors by Meta's names, memory-mapped",
    "tokenizer": "Llama 3's tokenizer (tiktoken)",
    "device": "the torch device the run computes on",
    "compute_dtype": "the dtype the run computes in",
    "weight": "the weight reader: weight(name) gives a tensor on the device, in compute_dtype",
    "prompt": "the prompt's text (LLAMA3_PROMPT, LLAMA3_PROMPT_FILE's text, or the canonical one)",
    "context_length": "the most positions the model was trained to read",
    "key_block": "keys per block once attention reads them a block at a time",
    "prefill_chunk": "positions per chunk when prefill feeds a prompt into the cache",
    # tokens and sizes
    "bos_id": "<|begin_of_text|>'s token id",
    "prompt_tokens": "the prompt's token ids, <|begin_of_text|> first",
    "chat_tokens": "a question in Llama 3's chat format, up to the assistant's header",
    "dim": "the width of the residual stream",
    "n_layers": "the number of transformer layers",
    "n_heads": "query heads per layer",
    "n_kv_heads": "key/value heads per layer",
    "head_dim": "the width of one head",
    "q_heads_per_kv_head": "query heads that share one key/value head",
    "vocab_size": "rows of the embedding table",
    "ffn_hidden": "the feed-forward network's hidden width",
    # the tokenizer from scratch
    "bpe_encode": "the from-scratch BPE: text to token ids, <|begin_of_text|> first",
    "bpe_decode": "token ids back to text",
    "bpe_merges": "the merges BPE makes on a piece of text, state by state",
    # the lesson's tensors
    "token_embeddings": "the prompt's rows of the embedding table [tokens × dim]",
    "q_per_token": "layer 0, head 0: each token's query before RoPE [tokens × head_dim]",
    "k_per_token": "layer 0, kv head 0: each token's key before RoPE [tokens × head_dim]",
    "rope_frequencies": "RoPE's frequency per pair, scaled when the checkpoint says so",
    "unscaled_rope_frequencies": "RoPE's frequencies before Llama 3.1's scaling",
    "rope_scale_factor": "the scaled-RoPE factor the run uses (None when unscaled)",
    "rope_cos": "cosines of every position's angles [tokens × pairs]",
    "rope_sin": "sines of every position's angles [tokens × pairs]",
    "residual_stream": "the stream before layer 0 and after every layer",
    "final_normed": "the last stream after the final RMSNorm",
    "logits": "the last position's logits [vocab]",
    "next_token_id": "the predicted next token's id",
    "output_name": "the output matrix's name (tok_embeddings.weight when tied)",
    # the model's functions
    "rms_norm": "RMSNorm(x, norm weight)",
    "apply_rope": "RoPE on queries or keys, Meta's adjacent pairs",
    "rope_rotate_half": "RoPE with Hugging Face's pairs, half a head apart",
    "scale_rope_frequencies": "Llama 3.1's scaling of RoPE frequencies by a factor",
    "causal_mask_for": "the causal mask for queries against keys",
    "attention_pattern": "the softmax of scaled, masked scores, every head",
    "attention_in_blocks": "attention over keys a block at a time (online softmax): q, k, v, block",
    "feed_forward": "the SwiGLU feed-forward network of a layer",
    "transformer_layer": "one layer: stream, layer index, cos, sin, cache → stream",
    "output_projection": "the normed stream times the output matrix: logits",
    "forward": "tokens → the last position's logits (every position's on request)",
    # generation
    "KVCache": "the key/value cache: KVCache(length, prompts=…)",
    "prefill": "a prompt into a KVCache, prefill_chunk positions at a time: last logits",
    "generate": "greedy or sampled generation from token ids",
    "pick_next": "the next token from logits under the sampling rules",
    "top_k_kept": "which tokens top-k keeps, from probabilities",
    "top_p_kept": "which tokens top-p keeps, from probabilities",
    "min_p_kept": "which tokens min-p keeps, from probabilities",
    "stream_text": "generation printed as it goes, stopping at stop strings",
    "left_padded": "a batch of prompts as left-padded rows and their padding counts",
    "forward_batch": "forward for a batch of left-padded rows",
    "generate_batch": "generation for a batch of prompts at once",
    # learning
    "trainable_copy": "a copy of the weights that can be trained",
    "weights_from": "a context in which the weight reader reads other tensors",
    "token_losses": "each next token's cross-entropy loss on a token sequence",
    "hitchhiker_tokens": "the learning section's token sequence",
    "perplexity": "e^(mean −log p(next token)) over token sequences, read in windows with a stride",
    "end_of_text_id": "<|end_of_text|>'s token id",
    "heldout_lines": "the held-out sentences (generators/heldout.txt), never trained on",
    "heldout": "the held-out sentences' token ids, <|begin_of_text|> … <|end_of_text|>",
    "heldout_score": "the model's held-out perplexity the section printed (None: demos skipped)",
    "file_in_float32": "the checkpoint's tensors in float32, as training reads them",
    "teach": "train on sentences: every weight (rank=None) or LoRA adapters; (trained, losses)",
    "new_fact": "the sentences the learning section teaches",
    "low_rank_adapters": "a LowRankAdapted (.a, .b, .scale) for each adapted matrix, by name",
    # quantization
    "quantize_int8": "int8 integers and scales for a matrix",
    "quantize_int4": "int4 integers and scales for a matrix",
    "dequantize": "integers and scales back to a float matrix",
    "quantized_models": "each scheme's quantized matrices by name",
    "quality": "perplexity, top-1 agreement, mean and p99 KL, p(answer) for each variant given",
    "quantization_quality": "the quality figures the section printed",
    # when it goes quietly wrong
    "silent_bugs": "each bug: the function it breaks, and its right and wrong line",
    "with_bug": "a context in which the notebook runs with one bug's lines",
    "bug_input": "the tokens the bugs are measured on",
    "logits_and_streams": "logits and every layer's stream for tokens",
    "measure": "a run's next token, p(answer), and damage per position and layer",
    "silent_bug_damage": "the damage the section printed, bug by bug",
    "rope_scaling_data": "the scaled-RoPE figure's distances, factor and scores",
    "rope_scaling_logits": "gap → how far the logits part without the scaling, past 8,192",
}


class ContractError(LookupError):
    """A name outside the contract was read, or the notebook did not define one in it."""


class NotebookGlobals(MutableMapping):
    """The notebook's globals, as the contract lets tests and benchmarks read and set them.

    `namespace` is the kernel's own dict, for what must run in it (`exec` of a cell's source)
    and for the names the notebook itself lists (a silent bug's functions).
    """

    def __init__(self, namespace: dict):
        self.namespace = namespace

    def _declared(self, name: str) -> str:
        if name not in CONTRACT:
            raise ContractError(
                f"{name!r} is not in the notebook's contract (testbeds/notebook_contract.py): "
                "declare it there, with what it holds, before reading it from the kernel"
            )
        return name

    def __getitem__(self, name: str):
        try:
            return self.namespace[self._declared(name)]
        except KeyError:
            raise ContractError(
                f"the notebook's kernel has no {name!r} ({CONTRACT[name]}), a name "
                "testbeds/notebook_contract.py declares: the notebook renamed or removed it, or "
                "the section that defines it did not run (LLAMA3_EXTRAS=0 skips the demos)"
            ) from None

    def __setitem__(self, name: str, value) -> None:
        self.namespace[self._declared(name)] = value

    def __delitem__(self, name: str) -> None:
        del self.namespace[self._declared(name)]

    def __iter__(self) -> Iterator[str]:
        return (name for name in CONTRACT if name in self.namespace)

    def __len__(self) -> int:
        return sum(1 for _ in self)
