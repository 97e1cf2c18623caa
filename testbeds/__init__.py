"""Test beds: what tests, benchmarks and generators share to make checkpoints and to exercise the
notebook. Nothing here is the model (that is the notebook's) and nothing here checks it (that
is tests/'s); nothing here imports tests/ or loads a reference model.

    presets             every params.json the test beds write, named: releases and small shapes
    random_checkpoint   a random-weight checkpoint in Meta's layout, of any preset
    sharded_checkpoint  a one-file checkpoint split into Meta's model-parallel shards
    transformers_llama  a checkpoint as transformers sees it: LlamaConfig, LlamaForCausalLM
    hf_folder           a checkpoint written as a Hugging Face model folder
    hub_cache           a Hugging Face hub cache made by hand
    gguf_writer         a checkpoint written as a GGUF file, with the gguf package
    diagram_data        the facts the BPE diagrams draw, which tests check against the notebook
    notebook_kernel     execute the notebook, then call functions in its kernel (a test's own,
                        sent as source)
"""
