"""Normalisation of search input for the ledger's kana and kanji name keys.

Staff type readings in whatever the input method gives them: hiragana,
full-width or half-width katakana, with or without a space between family
and given name. The ledger stores one key per name (katakana, no spaces), so
every spelling of the same reading must normalise to that key.
"""

from __future__ import annotations

import unicodedata

_HIRAGANA_FIRST = 0x3041  # ぁ
_HIRAGANA_LAST = 0x3096  # ゖ
_KATAKANA_OFFSET = 0x60  # ぁ (U+3041) -> ァ (U+30A1)
_SPACES = {" ", "\u3000", "\t"}


def hiragana_to_katakana(text: str) -> str:
    """Map each hiragana letter to its katakana twin; leave everything else."""
    return "".join(
        chr(ord(ch) + _KATAKANA_OFFSET) if _HIRAGANA_FIRST <= ord(ch) <= _HIRAGANA_LAST else ch
        for ch in text
    )


def _strip_spaces(text: str) -> str:
    return "".join(ch for ch in text if ch not in _SPACES)


def normalize_kana(text: str) -> str:
    """Return the ledger's kana key for a reading typed in any kana form.

    NFKC first turns half-width katakana (ﾔﾏﾀﾞ) into full-width (ヤマダ),
    composing the voiced marks, then hiragana is lifted to katakana.
    """
    return _strip_spaces(hiragana_to_katakana(unicodedata.normalize("NFKC", text)))


def normalize_name(text: str) -> str:
    """Return the ledger's kanji name key: NFKC (folds compatibility
    ideographs and full-width letters) with spaces removed."""
    return _strip_spaces(unicodedata.normalize("NFKC", text))


def prefix_upper_bound(prefix: str) -> str:
    """Smallest string greater than every string starting with `prefix`.

    `key >= prefix AND key < bound` is a prefix match that SQLite answers
    from a plain BINARY index, unlike LIKE (which needs case-sensitivity
    pragmas to use an index).
    """
    return prefix + "\U0010ffff"
