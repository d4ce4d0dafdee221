"""French text analysis for the embedded engine, built to give the same terms as the
Elasticsearch analyzer the ES engine declares (standard tokenizer, lowercase, elision, French
stop words, light_french stemmer, ASCII folding), so both engines score BM25 alike."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Unicode word-break approximation of Lucene's standard tokenizer: letters/digits joined by
# apostrophes or dots between letters, and by dots/commas between digits ("l'été", "3.5").
_TOKEN = re.compile(
    r"\w+(?:(?:(?<=[^\W\d_])['’.:·](?=[^\W\d_])|(?<=\d)[.,;'’](?=\d))\w+)*"
)
ELISIONS = frozenset("l m t qu n s j d c jusqu quoiqu lorsqu puisqu".split())

# Snowball's French stop list, as Elasticsearch's `_french_` stop filter uses it.
FRENCH_STOP_WORDS = frozenset("""
au aux avec ce ces dans de des du elle en et eux il je la le leur lui ma mais me même mes moi
mon ne nos notre nous on ou par pas pour qu que qui sa se ses sur ta te tes toi ton tu un une
vos votre vous c d j l à m n s t y étée étées étant suis es êtes sont serai seras sera serons
serez seront serais serait serions seriez seraient étais était étions étiez étaient fus fut
fûmes fûtes furent sois soit soyons soyez soient fusse fusses fussions fussiez fussent ayant
eu eue eues eus ai avons avez ont aurai aurons aurez auront aurais aurait aurions auriez
auraient avais avait aviez avaient eut eûmes eûtes eurent aie aies ait ayons ayez aient eusse
eusses eût eussions eussiez eussent ceci cela celà cet cette ici ils les leurs quel quels
quelle quelles sans soi
""".split())

_NORM = str.maketrans("àáâôèéêùûîç", "aaaoeeeuuic")
# Superscripts, fractions and other "No" numbers (m³, ½) are not word characters for the
# Unicode word-break rules, though Python's \w accepts them.
_NOT_WORD = {cp: " " for cp in range(0x3000) if unicodedata.category(chr(cp)) == "No"}
_FOLD_SPECIAL = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "đ": "d", "ł": "l"})


def tokenize(text: str) -> list[str]:
    """Words as the standard tokenizer cuts them (before any filter)."""
    return _TOKEN.findall(text.translate(_NOT_WORD))


def strip_elision(token: str) -> str:
    """``l'oscillateur`` → ``oscillateur`` when the part before the apostrophe is an article."""
    for i, ch in enumerate(token):
        if ch in "'’":
            return token[i + 1:] if token[:i] in ELISIONS else token
    return token


def _norm(s: list[str]) -> list[str]:
    if len(s) > 4:
        s = list("".join(s).translate(_NORM))
        out = [s[0]]
        for ch in s[1:]:
            if not (ch == out[-1] and ch.isalpha()):
                out.append(ch)
        s = out
    if len(s) > 4 and s[-2:] == ["i", "e"]:
        s = s[:-2]
    if len(s) > 4:
        if s[-1] == "r":
            s = s[:-1]
        if s[-1] == "e":
            s = s[:-1]
        if s[-1] == "e":
            s = s[:-1]
        if s[-1] == s[-2] and s[-1].isalpha():
            s = s[:-1]
    return s


def _ends(s: list[str], suffix: str) -> bool:
    return len(s) >= len(suffix) and "".join(s[-len(suffix):]) == suffix


@lru_cache(maxsize=200_000)
def light_stem(word: str) -> str:
    """Savoy's light French stemmer (UniNE), the algorithm of ES's ``light_french``."""
    s = list(word)
    n = len(s)
    if n > 5 and s[-1] == "x":
        if s[-3] == "a" and s[-2] == "u" and s[-4] != "e":
            s[-2] = "l"
        s.pop()
    if len(s) > 3 and s[-1] == "x":
        s.pop()
    if len(s) > 3 and s[-1] == "s":
        s.pop()
    for result in _stem_suffixes(s):
        return "".join(result)
    return "".join(_norm(s))


def _stem_suffixes(s: list[str]):
    """Yield the stem for the first suffix rule that applies (at most one)."""
    n = len(s)
    if n > 9 and _ends(s, "issement"):
        s = s[:-6]; s[-1] = "r"; yield _norm(s); return  # noqa: E702
    if n > 8 and _ends(s, "issant"):
        s = s[:-4]; s[-1] = "r"; yield _norm(s); return  # noqa: E702
    if n > 6 and _ends(s, "ement"):
        s = s[:-4]
        if len(s) > 3 and _ends(s, "ive"):
            s = s[:-1]; s[-1] = "f"  # noqa: E702
        yield _norm(s); return  # noqa: E702
    if n > 11 and _ends(s, "ficatrice"):
        s = s[:-5]; s[-2:] = ["e", "r"]; yield _norm(s); return  # noqa: E702
    if n > 10 and _ends(s, "ficateur"):
        s = s[:-4]; s[-2:] = ["e", "r"]; yield _norm(s); return  # noqa: E702
    if n > 9 and _ends(s, "catrice"):
        s = s[:-3]; s[-4:-1] = ["q", "u", "e"]; yield _norm(s); return  # noqa: E702
    if n > 8 and _ends(s, "cateur"):
        s = s[:-2]; s[-4:] = ["q", "u", "e", "r"]; yield _norm(s); return  # noqa: E702
    if n > 8 and _ends(s, "atrice"):
        s = s[:-4]; s[-2:] = ["e", "r"]; yield _norm(s); return  # noqa: E702
    if n > 7 and _ends(s, "ateur"):
        s = s[:-3]; s[-2:] = ["e", "r"]; yield _norm(s); return  # noqa: E702
    if n > 6 and _ends(s, "trice"):
        s = s[:-1]; s[-3:] = ["e", "u", "r"]  # noqa: E702
    n = len(s)
    if n > 5 and _ends(s, "ième"):
        yield _norm(s[:-4]); return  # noqa: E702
    if n > 7 and _ends(s, "teuse"):
        s = s[:-2]; s[-1] = "r"; yield _norm(s); return  # noqa: E702
    if n > 6 and _ends(s, "teur"):
        s = s[:-1]; s[-1] = "r"; yield _norm(s); return  # noqa: E702
    if n > 5 and _ends(s, "euse"):
        yield _norm(s[:-2]); return  # noqa: E702
    if n > 8 and _ends(s, "ère"):
        s = s[:-1]; s[-2] = "e"; yield _norm(s); return  # noqa: E702
    if n > 7 and _ends(s, "ive"):
        s = s[:-1]; s[-1] = "f"; yield _norm(s); return  # noqa: E702
    if n > 4 and (_ends(s, "folle") or _ends(s, "molle")):
        s = s[:-2]; s[-1] = "u"; yield _norm(s); return  # noqa: E702
    if n > 9 and _ends(s, "nnelle"):
        yield _norm(s[:-5]); return  # noqa: E702
    if n > 9 and _ends(s, "nnel"):
        yield _norm(s[:-3]); return  # noqa: E702
    if n > 4 and _ends(s, "ète"):
        s = s[:-1]; s[-2] = "e"  # noqa: E702
    n = len(s)
    if n > 8 and _ends(s, "ique"):
        s = s[:-4]
    n = len(s)
    if n > 8 and _ends(s, "esse"):
        yield _norm(s[:-3]); return  # noqa: E702
    if n > 7 and _ends(s, "inage"):
        yield _norm(s[:-3]); return  # noqa: E702
    if n > 9 and _ends(s, "isation"):
        s = s[:-7]
        if len(s) > 5 and _ends(s, "ual"):
            s[-2] = "e"
        yield _norm(s); return  # noqa: E702
    if n > 9 and _ends(s, "isateur"):
        yield _norm(s[:-7]); return  # noqa: E702
    if n > 8 and _ends(s, "ation"):
        yield _norm(s[:-5]); return  # noqa: E702
    if n > 8 and _ends(s, "ition"):
        yield _norm(s[:-5]); return  # noqa: E702
    yield _norm(s)


def ascii_fold(term: str) -> str:
    """Remove what accents the stemmer left (short words, ï, ü, œ …)."""
    if term.isascii():
        return term
    decomposed = unicodedata.normalize("NFKD", term.translate(_FOLD_SPECIAL))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def analyze(text: str) -> list[str]:
    """The indexed terms of ``text``, in order."""
    terms = []
    for token in tokenize(text):
        token = strip_elision(token.lower()).replace("’", "'")
        if not token or token in FRENCH_STOP_WORDS:
            continue
        terms.append(ascii_fold(light_stem(token)))
    return terms
