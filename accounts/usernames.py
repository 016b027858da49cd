"""The one rule for usernames, for the sign-up page (accounts/views.py) and the API's
sign-up (accounts.services.user_signup) alike. Names are public (the leaderboard), so a
name must not be markup, must not reorder the text around it, and must not pass for
someone else's.

- NFKC-normalised (as Django's `AbstractUser.normalize_username`), 1 to 150 characters
  of letters, digits and `. @ + - _` (Django's `UnicodeUsernameValidator`): no `<`, no
  spaces, no control or format characters (bidi overrides and isolates, zero-width
  joiners), no combining marks left over after composition.
- Letters of one script (Unicode's Scripts.txt, through `confusable_homoglyphs`), or of
  the combinations a language writes together (Japanese, Chinese, Korean, each with
  Latin): `demo` with a Cyrillic ie (U+0435) for its `e` is refused.
- Not `__`-prefixed: system accounts (`__fees__`) are named so.
- Not taken: neither the same name in another case, nor one that looks the same. Two
  names look the same when their keys (`username_key`) are equal: Unicode's
  confusables skeleton (UTS #39; `paypaI` with a capital I is `paypal`; a whole-script
  Cyrillic `ape` (U+0430 U+0440 U+0435) is the Latin `ape`), taken again after case folding. Every user's key
  (a digest of it) is stored (`User.username_key`), so the check is one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import cache

from django.core.exceptions import ValidationError

MAX_LENGTH = 150
ALLOWED = re.compile(r"^[\w.@+-]+\Z")
# Scripts a name may mix (UTS #39's "highly restrictive" level); Common (digits,
# punctuation) and Inherited go with any script.
NEUTRAL = {"COMMON", "INHERITED"}
SCRIPT_SETS = (
    {"LATIN", "HAN", "HIRAGANA", "KATAKANA"},
    {"LATIN", "HAN", "BOPOMOFO"},
    {"LATIN", "HAN", "HANGUL"},
)
# The confusables data marks right-to-left characters with LEFT-TO-RIGHT MARKs.
_MARKS = "\u200e\u200f"


def username_validate(raw: str) -> str:
    """The name as it will be stored, or ValidationError (code `invalid`, `reserved` or
    `mixed_script`). Reads no database: see `username_available`."""
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name or len(name) > MAX_LENGTH or not ALLOWED.match(name):
        raise ValidationError(
            f"Use 1 to {MAX_LENGTH} letters, digits and . @ + - _ only.", code="invalid"
        )
    if name.startswith("__"):
        raise ValidationError("That username is not allowed.", code="reserved")
    scripts = _scripts(name)
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in SCRIPT_SETS):
        raise ValidationError(
            "Use the letters of one script (for example Latin or Cyrillic, not both).",
            code="mixed_script",
        )
    return name


def username_available(name: str) -> None:
    """ValidationError (code `taken` or `confusable`) if `name` or a name that looks
    the same is taken."""
    from accounts.models import User

    if User.objects.filter(username__iexact=name).exists():
        raise ValidationError("That username is taken.", code="taken")
    if User.objects.filter(username_key=username_key(name)).exists():
        raise ValidationError(
            "That username looks the same as one that is taken.", code="confusable"
        )


def username_key(name: str) -> str:
    """What a name looks like, equal for names a reader cannot tell apart: a digest of
    its skeleton (`username_skeleton`), which can be 7 times as long as the name."""
    return hashlib.sha256(username_skeleton(name).encode()).hexdigest()


def username_skeleton(name: str) -> str:
    return _skeleton(_skeleton(name).casefold())


def _scripts(name: str) -> set[str]:
    from confusable_homoglyphs import categories

    return {categories.alias(c) for c in name} - NEUTRAL


def _skeleton(text: str) -> str:
    single, multiple = _prototypes()
    out = []
    for c in unicodedata.normalize("NFD", text):
        out.append(multiple.get(c) or single.get(c, c))
    return unicodedata.normalize("NFD", "".join(out))


@cache
def _prototypes() -> tuple[dict[str, str], dict[str, str]]:
    """Unicode's confusables as two maps: a character to the one that stands for its
    class of look-alikes, and a character to the sequence it looks like (`m` → `rn`).

    `confusable_homoglyphs` keeps confusables.txt's pairs in both directions. A
    sequence is always a pair's target, so a character paired with one maps to it; the
    characters paired with each other form classes (a target and its sources), and
    any one member can stand for a class: its lowest code point."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def root(c: str) -> str:
        while parent.setdefault(c, c) != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    multiple: dict[str, str] = {}
    for char, glyphs in confusables_data.items():
        char = char.strip(_MARKS)
        if len(char) != 1:
            continue
        for glyph in glyphs:
            other = glyph["c"].strip(_MARKS)
            if len(other) == 1:
                a, b = sorted((root(char), root(other)))
                parent[b] = a
            else:
                multiple[char] = other
    single = {c: root(c) for c in list(parent)}
    return single, {c: "".join(single.get(x, x) for x in seq) for c, seq in multiple.items()}
