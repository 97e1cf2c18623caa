"""Write tests/tokenizer_parity_strings.json: varied strings for tokenizer parity tests.

Deterministic (fixed seed, no network). Every string is built from the hand-written
fragments below, recombined by a seeded random generator, so the file is the same on
every run. Categories have roughly even weight; see CATEGORIES at the bottom.

    python -m generators.make_tokenizer_strings
"""

from __future__ import annotations

import json
import random
import string
import unicodedata

from plumbing import REPO_DIR

SEED = 20240418
PER_CATEGORY = 110
OUT = REPO_DIR / "tests" / "tokenizer_parity_strings.json"

# --- hand-written fragments -------------------------------------------------

PROSE = [
    "The lighthouse keeper counted the gulls twice before breakfast.",
    "A small llama wandered across the valley at dawn",
    "Nobody expected the kettle to start singing in the middle of the lecture.",
    "she folded the map, then unfolded it again, unsure of the way",
    "Rain tapped on the tin roof like a patient drummer.",
    "In the attic we found three boxes of letters and a broken violin.",
    "The committee will reconvene on Thursday; bring your notes.",
    "Why would anyone paint a bicycle bright orange?",
    "He whistled, and the dog came running—muddy, delighted, and very loud!",
    "Quiet mornings are the best time to tune a piano.",
    "The recipe calls for flour, salt, two eggs (large), and patience.",
    "Every tokenizer has its quirks; ours should match the reference exactly.",
    "THE STORM ARRIVED WITHOUT WARNING AND LEFT JUST AS SUDDENLY.",
    "mixed CaSe WoRdS sometimes TRIP up naive splitters",
    "Ellipses... dashes -- and semicolons; all of them matter.",
    '"Quoted speech," she said, "is still just text."',
    "The train to the coast leaves at half past nine.",
    "Bees do not care about your spreadsheet.",
    "A library is a garden of paper that never needs watering.",
    "Under the bridge, a fox watched the river carry leaves away.",
]

WORDS = (
    "apple river quantum marble whisper lantern orbit velvet canyon pixel harbor "
    "meadow thunder compass glacier ember falcon saddle tunnel prism cobalt "
    "the a of and to in is it that was for on are with as at be this have from"
).split()

SCRIPTS = {
    "zh": [
        "你好世界",
        "今天天气很好",
        "我们一起去图书馆吧",
        "机器学习",
        "分词器测试",
        "北京大学",
        "春眠不觉晓",
    ],
    "ja": [
        "こんにちは",
        "東京タワー",
        "カタカナとひらがな",
        "日本語の文章です",
        "ありがとうございます",
        "ラーメン食べたい",
    ],
    "ko": ["안녕하세요", "한국어 문장입니다", "서울특별시", "감사합니다", "토크나이저"],
    "ar": ["مرحبا بالعالم", "اللغة العربية", "شكرا جزيلا", "كتاب جديد", "السلام عليكم"],
    "he": ["שלום עולם", "עברית היא שפה", "תודה רבה", "ספר חדש"],
    "hi": ["नमस्ते दुनिया", "हिन्दी भाषा", "धन्यवाद", "भारत एक देश है", "क्षत्रिय"],
    "th": ["สวัสดีครับ", "ภาษาไทย", "ขอบคุณมาก", "กรุงเทพมหานคร"],
    "ru": ["Привет, мир", "Русский язык", "Спасибо большое", "Москва — столица", "ЁЖИК в тумане"],
    "el": ["Γειά σου κόσμε", "Ελληνική γλώσσα", "ευχαριστώ πολύ", "ΑΘΗΝΑ", "λόγος καὶ ἔργον"],
}

EMOJI = [
    "😀",
    "🙂",
    "🚀",
    "🦙",
    "🔥",
    "✨",
    "🎉",
    "❤️",
    "👍",
    "🤖",
    "🌍",
    "🍕",
    "☕",
    "⚡",
    "🐍",
    "👨‍👩‍👧‍👦",
    "👩‍💻",
    "🧑‍🚀",
    "🏳️‍🌈",
    "🏴‍☠️",
    "❤️‍🔥",
    "👁️‍🗨️",
    "🧔‍♀️",
    "👍🏻",
    "👍🏼",
    "👍🏽",
    "👍🏾",
    "👍🏿",
    "👋🏽",
    "🧑🏿‍🎤",
    "🇺🇸",
    "🇯🇵",
    "🇫🇷",
    "🇧🇷",
    "🇮🇳",
    "🇺🇳",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "1️⃣",
    "#️⃣",
    "©️",
    "™️",
]

ACCENTED = [
    "café",
    "naïve",
    "résumé",
    "façade",
    "jalapeño",
    "Zürich",
    "São Paulo",
    "smörgåsbord",
    "Ångström",
    "crème brûlée",
    "Dvořák",
    "Łódź",
    "İstanbul",
    "Æsir",
    "Øresund",
    "straße",
    "piñata",
    "coöperate",
    "Ñandú",
    "ĳssel",
    "œuvre",
    "Đorđe",
    "Ţara",
    "Şişli",
]
COMBINING = [
    "\u0301",
    "\u0300",
    "\u0308",
    "\u0303",
    "\u0327",
    "\u030a",
    "\u0323",
    "\u0336",
    "\u20dd",
    "\u0489",
]

NUMBER_SEPARATORS = [",", ".", " ", "_", "'", "\u00a0", "\u202f"]

CODE = [
    "def add(a, b):\n    return a + b\n",
    'for i in range(10):\n\tprint(f"{i:03d}")',
    "class Node:\n    def __init__(self, value):\n        self.value = value\n        self.next = "
    "None\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)",
    "lambda xs: [x ** 2 for x in xs if x % 2 == 0]",
    '#include <stdio.h>\n\nint main(void) {\n    printf("hello\\n");\n    return 0;\n}\n',
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "const sum = (arr) => arr.reduce((acc, x) => acc + x, 0);",
    "document.querySelector('#app').addEventListener('click', () => { console.log(\"clicked\"); "
    "});",
    "async function load(url) {\n  const res = await fetch(url);\n  return res.json();\n}",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC LIMIT 10;",
    "INSERT INTO orders (id, total) VALUES (42, 19.99);",
    "UPDATE stock SET qty = qty - 1 WHERE sku = 'A-100';",
    '<!DOCTYPE html>\n<html lang="en">\n<head><title>Test</title></head>\n<body><p class="x">Hi '
    "&amp; bye</p></body>\n</html>",
    '<div id="main" data-count="3"><span>&lt;tag&gt;</span></div>',
    '{"name": "llama", "version": 3, "tags": ["a", "b"], "nested": {"ok": true, "n": null}}',
    '[\n  {"id": 1, "value": 3.14},\n  {"id": 2, "value": -0.5e-3}\n]',
    '#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do echo "$f"; done',
    "grep -rn 'TODO' src/ | wc -l && ls -la ~/.config 2>/dev/null",
    'export PATH="$HOME/.local/bin:$PATH"; cd /tmp && tar -xzf archive.tar.gz',
    "x+=1;y-=2;z*=3;w/=4;v%=5;u**=2;t//=3",
    "if (a != b && c <= d || !e) { return -1; }",
    "    \n    # indented comment\n        pass\n",
]

CONTRACTION_BASES = [
    "it",
    "he",
    "she",
    "we",
    "they",
    "you",
    "I",
    "that",
    "who",
    "there",
    "John",
    "Llama",
    "do",
    "can",
    "would",
    "should",
]
CONTRACTION_SUFFIXES = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't"]
APOSTROPHES = ["'", "\u2019", "`"]

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_17|>",
    "<|reserved_special_token_250|>",
    "<|finetune_right_pad_id|>",
    "<|python_tag|>",
    "<|eom_id|>",
    "<|image|>",
]
ROLES = ["system", "user", "assistant", "ipython", "tool"]

URL_SCHEMES = ["http://", "https://", "ftp://", "file:///", "ws://"]
HOSTS = [
    "example.com",
    "sub.domain.example.org",
    "localhost:8080",
    "127.0.0.1",
    "[::1]:443",
    "xn--caf-dma.example",
    "例え.jp",
    "bücher.de",
]
PATHS = [
    "",
    "/",
    "/index.html",
    "/a/b/c?x=1&y=two#frag",
    "/search?q=llama+3&lang=en",
    "/path%20with%20spaces/",
    "/~user/file.tar.gz",
    "/api/v2/items/12345",
]
EMAIL_USERS = ["alice", "bob.smith", "first.last+tag", "x_y-z", "user123", "o'brien", "müller"]
EMAIL_DOMAINS = ["example.com", "mail.example.co.uk", "test.io", "uni.edu", "例え.jp"]

WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "\r\n\r\n",
    " \n",
    "\n ",
    " \t ",
    "\u00a0",
    "\u3000",
    "\u2003",
    "\f",
    "\v",
    "\u2028",
    "\u0085",
]

# Printable unicode soup: code point ranges to draw from (no surrogates, no private use).
SOUP_RANGES = [
    (0x20, 0x7E),
    (0xA0, 0x24F),
    (0x250, 0x2FF),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x530, 0x58F),
    (0x590, 0x5FF),
    (0x600, 0x6FF),
    (0x900, 0x97F),
    (0xE00, 0xE7F),
    (0x10A0, 0x10FF),
    (0x1100, 0x11FF),
    (0x1E00, 0x1EFF),
    (0x2000, 0x206F),
    (0x2100, 0x23FF),
    (0x2500, 0x27BF),
    (0x3040, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFFEF),
    (0x1D400, 0x1D7FF),
    (0x1F300, 0x1FAFF),
    (0x20000, 0x2A6DF),
]


# --- generators, one per category --------------------------------------------


def prose(rng: random.Random) -> str:
    k = rng.randint(1, 4)
    text = " ".join(rng.sample(PROSE, k))
    if rng.random() < 0.3:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))
    if rng.random() < 0.2:
        text = text.upper() if rng.random() < 0.5 else text.lower()
    if rng.random() < 0.2:
        text = " " + text
    return text


def mixed_scripts(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.7:
            parts.append(rng.choice(rng.choice(list(SCRIPTS.values()))))
        elif r < 0.85:
            parts.append(rng.choice(WORDS))
        else:
            parts.append(str(rng.randint(0, 9999)))
    sep = rng.choice([" ", "", ", ", "。", "、", "\n", " - "])
    return sep.join(parts)


def emoji(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.6:
            parts.append(rng.choice(EMOJI))
        elif r < 0.8:
            parts.append(rng.choice(WORDS))
        else:
            parts.append(rng.choice(["!", "?", " ", "", "...", "\n"]))
    return rng.choice(["", " "]).join(parts)


def accents(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 6)):
        word = rng.choice(ACCENTED)
        r = rng.random()
        if r < 0.3:
            word = unicodedata.normalize("NFD", word)
        elif r < 0.45:
            word = unicodedata.normalize("NFKD", word)
        elif r < 0.6:
            word = "".join(
                c + (rng.choice(COMBINING) if c.isalpha() and rng.random() < 0.4 else "")
                for c in word
            )
        elif r < 0.7:
            # stacked combining marks on one base (zalgo-ish)
            word = rng.choice("aeiouxyz") + "".join(
                rng.choice(COMBINING) for _ in range(rng.randint(2, 12))
            )
        parts.append(word)
    return " ".join(parts)


def whitespace(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 10)):
        if rng.random() < 0.55:
            ws = rng.choice(WHITESPACE)
            parts.append(ws * rng.choice([1, 1, 2, 3, 5, 17, 64]))
        else:
            parts.append(rng.choice(WORDS + ["x", "1", "!", "é", "中"]))
    text = "".join(parts)
    if rng.random() < 0.3:
        text = rng.choice(WHITESPACE) * rng.randint(1, 6) + text
    if rng.random() < 0.3:
        text = text + rng.choice(WHITESPACE) * rng.randint(1, 6)
    return text


def _digits(rng: random.Random, n: int) -> str:
    first = str(rng.randint(1, 9)) if n > 1 and rng.random() < 0.9 else str(rng.randint(0, 9))
    return first + "".join(rng.choice(string.digits) for _ in range(n - 1))


def numbers(rng: random.Random) -> str:
    n = rng.randint(1, 30)
    d = _digits(rng, n)
    r = rng.random()
    if r < 0.2:
        out = d
    elif r < 0.35:
        out = "-" + d
    elif r < 0.5:
        out = d + "." + _digits(rng, rng.randint(1, 12))
    elif r < 0.7:
        sep = rng.choice(NUMBER_SEPARATORS)
        head = len(d) % 3 or 3
        groups = [d[:head]] + [d[i : i + 3] for i in range(head, len(d), 3)]
        out = sep.join(groups)
    elif r < 0.8:
        out = (
            f"{rng.choice(['', '-', '+'])}{d[:3]}e{rng.choice(['', '-', '+'])}{rng.randint(0, 308)}"
        )
    elif r < 0.9:
        out = (
            rng.choice(["$", "€", "£", "¥", "0x", "#", "v", "~"])
            + d
            + rng.choice(["", "%", "px", "kg", " USD", "th"])
        )
    else:
        # non-ASCII digits: Arabic-Indic, Devanagari, fullwidth, superscripts
        table = rng.choice(["٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "⁰¹²³⁴⁵⁶⁷⁸⁹"])
        out = "".join(table[int(c)] for c in d)
    if rng.random() < 0.25:
        out = f"{rng.choice(WORDS)} {out} {rng.choice(WORDS)}"
    return out


def code(rng: random.Random) -> str:
    text = "\n".join(rng.sample(CODE, rng.randint(1, 3)))
    if rng.random() < 0.3:
        text = text.replace("    ", "\t")
    if rng.random() < 0.2:
        text = text.replace("\n", "\r\n")
    return text


def contractions(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 6)):
        base = rng.choice(CONTRACTION_BASES)
        suffix = rng.choice(CONTRACTION_SUFFIXES)
        r = rng.random()
        if r < 0.25:
            suffix = suffix.upper()
        elif r < 0.35:
            suffix = "".join(c.upper() if rng.random() < 0.5 else c for c in suffix)
        elif r < 0.45:
            base = base.upper()
            suffix = suffix.upper()
        if rng.random() < 0.15:
            suffix = suffix.replace("'", rng.choice(APOSTROPHES))
        parts.append(base + suffix)
    text = " ".join(parts)
    if rng.random() < 0.2:
        text = rng.choice(["'s", "'S", "'ll", "'LL", "'d", "'"]) + text
    if rng.random() < 0.2:
        text = text + rng.choice(["'", "''", "'s'", " 's", "'ve'"])
    return text


def special_tokens(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        role = rng.choice(ROLES)
        header = f"<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n"
        text = f"{header}{rng.choice(PROSE)}<|eot_id|>"
    elif r < 0.7:
        text = "".join(
            rng.choice(SPECIAL_TOKENS + [" ", "\n", rng.choice(WORDS)])
            for _ in range(rng.randint(1, 6))
        )
    elif r < 0.85:
        text = f"<|reserved_special_token_{rng.randint(0, 260)}|>"
    else:
        # near misses: broken spellings
        tok = rng.choice(SPECIAL_TOKENS)
        i = rng.randrange(len(tok))
        text = tok[:i] + rng.choice(["", " ", "|", "<", ">", "_"]) + tok[i + 1 :]
    return text


def urls_emails(rng: random.Random) -> str:
    if rng.random() < 0.6:
        text = rng.choice(URL_SCHEMES) + rng.choice(HOSTS) + rng.choice(PATHS)
    else:
        text = f"{rng.choice(EMAIL_USERS)}@{rng.choice(EMAIL_DOMAINS)}"
    if rng.random() < 0.3:
        text = (
            rng.choice(["see ", "mailto:", "(", "<", "Visit "])
            + text
            + rng.choice([")", ">", ".", "", ","])
        )
    return text


def soup(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(1, 80)):
        lo, hi = rng.choice(SOUP_RANGES)
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) in ("Cn", "Co", "Cs"):
            c = "?"
        chars.append(c)
    return "".join(chars)


def long_words(rng: random.Random) -> str:
    r = rng.random()
    n = rng.choice([50, 100, 300, 1000, 2500])
    if r < 0.3:
        text = "".join(rng.choice(string.ascii_lowercase) for _ in range(n))
    elif r < 0.5:
        text = rng.choice(WORDS) * (n // 5)
    elif r < 0.6:
        text = rng.choice("a!-=*0") * n
    elif r < 0.7:
        text = "".join(rng.choice(SCRIPTS["zh"] + SCRIPTS["ja"]) for _ in range(n // 20))
    elif r < 0.8:
        text = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))
    elif r < 0.9:
        text = "Pneumonoultramicroscopicsilicovolcanoconiosis" * rng.randint(1, 20)
    else:
        text = "".join(rng.choice(WORDS).capitalize() for _ in range(n // 6))
    return text


def tiny(rng: random.Random) -> str:
    pool = [
        "",
        " ",
        "\n",
        "\t",
        "\r",
        "\r\n",
        "'",
        "a",
        "Z",
        "0",
        "9",
        "é",
        "e\u0301",
        "中",
        "😀",
        "🦙",
        "<",
        "|",
        "\u200b",
        "\u200d",
        "\ufeff",
        "\x00",
        "\x7f",
        "\u00ad",
        "ß",
        "İ",
    ]
    r = rng.random()
    if r < 0.5:
        return rng.choice(pool)
    if r < 0.8:
        return chr(
            rng.choice(
                [
                    rng.randint(0x20, 0x7E),
                    rng.randint(0xA0, 0x2FF),
                    rng.randint(0x370, 0x3FF),
                    rng.randint(0x4E00, 0x9FFF),
                ]
            )
        )
    return rng.choice(pool) + rng.choice(pool)


CATEGORIES = {
    "prose": prose,
    "mixed_scripts": mixed_scripts,
    "emoji": emoji,
    "accents": accents,
    "whitespace": whitespace,
    "numbers": numbers,
    "code": code,
    "contractions": contractions,
    "special_tokens": special_tokens,
    "urls_emails": urls_emails,
    "soup": soup,
    "long_words": long_words,
    "tiny": tiny,
}

# Strings every run must contain, whatever the generator draws.
FIXED = [
    "",
    " ",
    "a",
    "\t",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_17|>",
    "123456789012345678901234567890",
    "-98765432109876543210.0123456789",
    "1,234,567,890,123,456,789,012",
    "don't DON'T I'm I'M you'll YOU'LL we've WE'VE they're THEY'RE he'd HE'D it's IT'S",
    "👨‍👩‍👧‍👦 👍🏽 🇯🇵 🏳️‍🌈",
    "e\u0301 vs \u00e9",
    "a\r\nb\r\n\r\nc\n\n\td  ",
]


def make_strings(seed: int = SEED, per_category: int = PER_CATEGORY) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = list(FIXED)
    for _ in range(per_category):
        for generate in CATEGORIES.values():
            out.append(generate(rng))
    # Keep first occurrences only, in a stable order.
    seen: set[str] = set()
    unique = [s for s in out if not (s in seen or seen.add(s))]
    for s in unique:
        s.encode("utf-8")  # no lone surrogates
    return unique


def main() -> None:
    strings = make_strings()
    OUT.write_text(json.dumps(strings, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(strings)} strings, {OUT.stat().st_size:,} bytes to {OUT}")


if __name__ == "__main__":
    main()
