"""Facts the diagrams draw, kept apart from the drawing so that tests read them without
matplotlib: tests/test_bpe.py checks them against the notebook's own functions."""

# " ultimate" under Llama 3's ranks: every state of its pieces, and the rank of the token each
# merge made (facts from tokenizer.model; tests/test_bpe.py checks them against the notebook's
# own bpe_merges).
BPE_STATES = [
    [" ", "u", "l", "t", "i", "m", "a", "t", "e"],
    [" ", "u", "l", "t", "i", "m", "at", "e"],
    [" ", "u", "l", "t", "im", "at", "e"],
    [" ", "u", "l", "t", "im", "ate"],
    [" ", "ul", "t", "im", "ate"],
    [" ", "ult", "im", "ate"],
    [" ", "ult", "imate"],
    [" ult", "imate"],
    [" ultimate"],
]
BPE_MERGE_RANKS = [266, 318, 349, 360, 495, 3509, 8675, 17139]

# " например" (Russian, "for example"): where joining pairs in rank order stops, with each
# piece's rank, and the single token the vocabulary has for the whole piece (tests/test_bpe.py
# checks both against the notebook's bpe_merges and bpe_piece).
BPE_WHOLE_WORD = " например"
BPE_WHOLE_MERGED = [" нап", "р", "имер"]
BPE_WHOLE_MERGED_RANKS = [91105, 2233, 81448]
BPE_WHOLE_RANK = 111797
