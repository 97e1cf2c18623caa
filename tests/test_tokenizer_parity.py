"""Our tokenizer encodes exactly as Meta's Llama 3 tokenizer, over many varied strings.

The strings come from generators/make_tokenizer_strings.py (rerun it to regenerate
tests/tokenizer_parity_strings.json). Text that spells a special token is encoded as
ordinary text by both tokenizers (Meta's default), hence `disallowed_special=()`.
"""

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.notebook_values import TOKENIZER_PARITY_STRINGS

STRINGS_FILE = TOKENIZER_PARITY_STRINGS
STRINGS = json.loads(STRINGS_FILE.read_text(encoding="utf-8"))
SHOW_MISMATCHES = 5


def _problems(tokenizer, meta, text):
    ours = tokenizer.encode(text, disallowed_special=())
    theirs = meta.encode(text, bos=False, eos=False)
    problems = []
    if ours != theirs:
        problems.append(f"encode differs for {text!r}:\n  ours={ours}\n  meta={theirs}")
    decoded = tokenizer.decode(ours)
    if decoded != text:
        problems.append(f"round trip differs for {text!r}: decoded {decoded!r}")
    return problems


def test_strings_file_covers_every_category():
    assert isinstance(STRINGS, list) and all(isinstance(s, str) for s in STRINGS)
    assert len(STRINGS) >= 1000
    assert STRINGS_FILE.stat().st_size < 600_000
    joined = "\n".join(STRINGS)
    checks = {
        "empty string": "" in STRINGS,
        "single character": any(len(s) == 1 for s in STRINGS),
        "CJK": re.search(r"[\u4e00-\u9fff]", joined),
        "Japanese kana": re.search(r"[\u3040-\u30ff]", joined),
        "Korean": re.search(r"[\uac00-\ud7a3]", joined),
        "Arabic": re.search(r"[\u0600-\u06ff]", joined),
        "Hebrew": re.search(r"[\u0590-\u05ff]", joined),
        "Devanagari": re.search(r"[\u0900-\u097f]", joined),
        "Thai": re.search(r"[\u0e00-\u0e7f]", joined),
        "Cyrillic": re.search(r"[\u0400-\u04ff]", joined),
        "Greek": re.search(r"[\u0370-\u03ff]", joined),
        "emoji": re.search(r"[\U0001f300-\U0001faff]", joined),
        "emoji ZWJ sequence": "\u200d" in joined,
        "skin tone": re.search(r"[\U0001f3fb-\U0001f3ff]", joined),
        "flag": re.search(r"[\U0001f1e6-\U0001f1ff]{2}", joined),
        "combining mark": re.search(r"[\u0300-\u036f]", joined),
        "tab": "\t" in joined,
        "CRLF": "\r\n" in joined,
        "run of spaces": "     " in joined,
        "leading whitespace": any(s[:1].isspace() for s in STRINGS),
        "trailing whitespace": any(s[-1:].isspace() for s in STRINGS),
        "20+ digit number": re.search(r"\d{20,}", joined),
        "decimal": re.search(r"\d\.\d", joined),
        "negative number": re.search(r"-\d", joined),
        "python code": "def " in joined,
        "SQL": "SELECT " in joined,
        "HTML": "<html" in joined,
        "uppercase contraction": re.search(r"'(S|T|RE|VE|M|LL|D)\b", joined),
        "special-token spelling": all(
            name in joined
            for name in ("<|begin_of_text|>", "<|eot_id|>", "<|reserved_special_token_17|>")
        ),
        "URL": "https://" in joined,
        "email": re.search(r"\w@\w", joined),
        "very long word": any(len(s) >= 1000 and " " not in s for s in STRINGS),
    }
    missing = [name for name, found in checks.items() if not found]
    assert not missing, f"tokenizer_parity_strings.json lacks: {missing}"


def test_same_tokens_as_meta_on_all_strings(tokenizer, meta):
    problems = [p for text in STRINGS for p in _problems(tokenizer, meta, text)]
    shown = "\n".join(problems[:SHOW_MISMATCHES])
    assert not problems, (
        f"{len(problems)} problems over {len(STRINGS)} strings; first {SHOW_MISMATCHES}:\n{shown}"
    )


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_same_tokens_as_meta_on_arbitrary_text(tokenizer, meta, text):
    ours = tokenizer.encode(text, disallowed_special=())
    assert tokenizer.decode(ours) == text
    assert ours == meta.encode(text, bos=False, eos=False)
