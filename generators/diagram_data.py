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
