"""The language of the question, for the abstention message (and the logs).

A script count, not a model: Han characters outnumbering Latin words make it Chinese
(unless kana shows it is Japanese); Hangul makes it Korean; anything else is taken as
English. Parenthesised or quoted terms do not count, unless there is nothing else. The
abstention messages are looked up by these codes, falling back to "en".
"""

from __future__ import annotations

import re
import unicodedata


def _script(c: str) -> str | None:
    o = ord(c)
    if o == 0x30FB:  # the katakana middle dot also appears in Chinese text
        return None
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9D:
        return "kana"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "hangul"
    if (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x20000 <= o <= 0x2FA1F
        or 0xF900 <= o <= 0xFAFF
    ):
        return "han"
    if c.isalpha() and unicodedata.name(c, "").startswith("LATIN"):
        return "latin"
    return None


# Parenthesised or quoted stretches are often terms cited from another language.
_ASIDE = re.compile(r"\([^)]*\)|（[^）]*）|\"[^\"]*\"|“[^”]*”|「[^」]*」|『[^』]*』")


def detect_language(text: str) -> str:
    """ "zh", "ja", "ko" or "en"."""
    main = _ASIDE.sub(" ", text)
    if not main.strip():
        main = text
    counts = {"kana": 0, "hangul": 0, "han": 0, "latin": 0}
    latin_words = 0
    previous_latin = False
    for c in main:
        script = _script(c)
        if script:
            counts[script] += 1
        if script == "latin" and not previous_latin:
            latin_words += 1
        previous_latin = script == "latin"
    if counts["kana"]:
        return "ja"
    if counts["hangul"] > counts["han"]:
        return "ko"
    # A Han character carries about as much as a word: weigh them against Latin words.
    if counts["han"] and counts["han"] >= latin_words:
        return "zh"
    return "en"


def pick_message(messages: dict[str, str], language: str) -> str:
    return messages.get(language) or messages["en"]
