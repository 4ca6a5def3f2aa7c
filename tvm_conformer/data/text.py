"""General English sentences from Debian's `fortunes` package (quotations, proverbs, jokes).

The fortune files are split into sentences, attributions ("-- Author") dropped, and each sentence
normalized with `corpus.normalize_text`; only sentences of 3 to 20 words made of ordinary
words are kept. Every sentence goes to one part, "train", "valid" or "test", by a hash of its
text, so the parts never share a sentence, whatever files are present.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tvm_conformer.data.corpus import normalize_text
from tvm_conformer.errors import UserError

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# general-English files; code listings, ascii art and chat logs are left out, and so are the
# files whose jokes are about groups of people
FORTUNE_FILES = (
    "cookie", "education", "food", "fortunes", "goedel", "humorists", "kids", "law",
    "literature", "love", "magic", "medicine", "miscellaneous", "news", "people", "pets",
    "platitudes", "politics", "pratchett", "riddles", "science", "songs-poems", "sports",
    "tao", "wisdom", "work",
)  # fmt: skip
MIN_WORDS, MAX_WORDS = 3, 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def _part(sentence: str) -> str:
    h = int(hashlib.sha256(sentence.encode()).hexdigest()[:8], 16) % 100
    return "test" if h < 3 else "valid" if h < 5 else "train"


def _clean(raw: str) -> str | None:
    if re.search(r"[@#<>{}\[\]|\\/_=*^~]|https?:|www\.|\t|  {4}", raw):
        return None  # code, addresses, tables
    try:
        text = normalize_text(raw)
    except ValueError:  # e.g. "30:26", which is no clock time
        return None
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if any(len(w) > 18 for w in words) or sum(len(w) == 1 and w not in "ai" for w in words) > 2:
        return None
    return text


def fortune_sentences(fortune_dir: str | Path = FORTUNE_DIR) -> dict[str, list[str]]:
    """{"train", "valid", "test"}: distinct normalized sentences, each in one part, sorted.

    UserError if none of FORTUNE_FILES is installed (`apt-get install fortunes`).
    """
    root = Path(fortune_dir)
    files = [root / name for name in FORTUNE_FILES if (root / name).is_file()]
    if not files:
        raise UserError(f"no fortune files under {root}; install them with "
                        "`apt-get install fortunes fortunes-min`")
    seen: set[str] = set()
    for path in files:
        for fortune in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln for ln in fortune.splitlines() if not ln.lstrip().startswith("--")]
            if any(re.match(r"^\s*[A-Za-z ]{1,20}:\s", ln) for ln in lines):
                continue  # dialogues ("Q: ...", "Speaker: ...")
            body = " ".join(ln.strip() for ln in lines if ln.strip())
            for raw in _SENTENCE_END.split(body):
                text = _clean(raw)
                if text:
                    seen.add(text)
    parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for s in sorted(seen):
        parts[_part(s)].append(s)
    return parts
