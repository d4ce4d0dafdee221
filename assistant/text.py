"""Plain-text tools shared by indexing and answering: sentences, folding, words, content terms.

    split_sentences(text)  -> the sentences: chunks, sentence windows and extractive answers
    fold(text)             -> lower case, ligatures expanded, accents removed
    tokens(text)           -> folded words and numbers ("3,5" -> "3.5")
    content_terms(text)    -> stemmed content words, stop words (French and English) removed

Two kinds of folding live in the project on purpose. :func:`fold` here is for matching the
reader's words against ours in Python only (language detection, extractive answers, follow-up
rewrites): it lower-cases and also maps typographic apostrophes, and nothing outside this
process has to agree with it. :func:`assistant.engines.analysis.ascii_fold` must give the very
terms Elasticsearch's ``asciifolding`` filter gives (after its stemmer, on lower-cased tokens, with
its own table: ø, đ, ł …) so that both engines score BM25 alike; changing either one to suit the
other would break that parity or this matching.
"""

from __future__ import annotations

import re
import unicodedata

# -- folding and words -----------------------------------------------------------------------

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "’": "'", "‘": "'"})
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+")


def fold(text: str) -> str:
    """Lower case, ligatures expanded, accents removed, apostrophes made straight:
    "Égaliseur Œuvre l’été" -> "egaliseur oeuvre l'ete"."""
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES).lower())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """Folded words and numbers, in order ("3,5" and "3.5" both give "3.5"); apostrophes,
    hyphens and any other non-letter split words ("l'attaque" -> "l", "attaque")."""
    return [t.replace(",", ".") for t in _TOKEN.findall(fold(text))]


# Folded French and English function words (and a few question verbs: "explique", "explain")
# that say nothing about the subject of a question or a sentence.
STOP_WORDS = frozenset("""
a au aux avec ce ceci cela ces cet cette ci c ca comme comment dans de des du d elle elles en
entre est et etre ete etes eu faire fais fait faites font faut il ils je j l la le les leur leurs lui ma mais me
meme mes m moi mon n ne nos notre nous on ont ou par pas peu peut peuvent plus pour pourquoi
quand que quel quelle quelles quels qui quoi qu sa sans se ses si son sont sous sur s ta te tes
toi ton tous tout toute toutes tres trop tu t un une vos votre vous y avoir ai as avons avez
suis sommes sera seront dois doit doivent devrait peux pouvez veux veut va vais vont aussi alors
ainsi donc car ni or deja encore ici la voici voila bien tres chaque autre autres apres avant
combien lequel laquelle lesquels dont cas fois etc ex env cf oui non explique expliquer
the a an and or but if of to in on at by for with without from into about as is are was were be
been being do does did done have has had having can could should would will shall may might must
i me my we our you your he she it its they them their this that these those there here what
which who whom whose why how when where whats hows not no yes so than then too very just also
more most some any each other such only own same both few all get got use using used explain
""".split())

_SUFFIXES = sorted("""
issements issement ations ation ements ement ments ment atrices atrice ateurs ateur euses euse
eurs eur ions ion ings ing ables able ibles ible iques ique ismes isme istes iste ives ive ifs
if ees ee es er ez ed ors or ages age ies ly s x e
""".split(), key=len, reverse=True)


def stem(word: str) -> str:
    """A very light French/English stemmer for folded words: enough for plurals and common
    derivations (compresseur / compresseurs / compression / compressor -> "compress").
    Words of 3 letters or fewer and numbers are kept as they are."""
    if len(word) <= 3 or word[0].isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                continue
            return word[: -len(suffix)]
    return word


def content_terms(text: str) -> list[str]:
    """Stemmed content words of ``text``, stop words and single letters removed, in order,
    without repeats: "Les compresseurs" and "la compression" both give ["compress"]."""
    seen: dict[str, None] = {}
    for tok in tokens(text):
        if tok in STOP_WORDS or (len(tok) < 2 and not tok.isdigit()):
            continue
        seen.setdefault(stem(tok), None)
    return list(seen)


# -- sentences -------------------------------------------------------------------------------

# Words that a period does not end ("env. 10 ms", "ex. un de-esser", "cf. l'article", "feat.
# Mary J"), compared lower-cased without the period ("m", "mm": M., MM.). "min" and "max" are
# left out on purpose: in this blog "-6 dB max." ends a sentence, it does not abbreviate.
ABBREVIATIONS = frozenset("""env ex cf p pp fig vol no n° m mme mlle mm dr pr st ste vs approx
av apr e.g i.e eg ie mr mrs resp réf ref nb n.b éd ed chap art j.-c feat""".split())

# End punctuation (runs too: "?!", "..."), then closing quotes and brackets, which stay with the
# sentence they close; French spacing puts a space before » and ” ("« Super ! »").
_END = re.compile(r"(?P<punct>[.!?…]+)(?:(?:\s?[»”]|[\"'’)\]])+[.!?…]*)*(?=\s)")
# What a sentence starts with: a capital or a digit, maybe after an opening quote or bracket, a
# dash, a bullet or some other symbol ("« Le", "(Voir", "—> On", "😮 Un") but not after closing
# or clause punctuation ("! ): le"); or a list marker, whatever follows it ("- avec un …").
_STARTS = re.compile(r"(?:[^\w\s)\]}»”’,;:.!?…]{1,3} ?)?[A-ZÀ-ÖØ-Þ0-9]|[-–—•*→>]+ ")
_INITIAL = re.compile(r"[A-ZÀ-ÖØ-Þ]\.")
_LETTER = re.compile(r"[^\W\d_]")


def _period_ends(before: list[str], next_word: str) -> bool:
    """Whether a period after the words ``before`` (the last one carries it) and before
    ``next_word`` ends a sentence: not after an abbreviation, nor after an initial that stands
    next to another one ("J. S. Bach"; a lone capital ends one: "le facteur Q. Ce dernier")."""
    word = before[-1].lstrip("([«\"“'‘").rstrip(".").lower()
    if word in ABBREVIATIONS:
        return False
    if _INITIAL.fullmatch(before[-1]):
        neighbours = before[-2:-1] + [next_word]
        return not any(_INITIAL.fullmatch(w) for w in neighbours)
    return True


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace inside each collapsed to single spaces.

    A sentence ends at . ! ? or … (with the closing quotes and brackets after it) before a
    space and what starts a sentence: a capital or a digit (maybe after an opening quote,
    bracket, dash or bullet), or a list marker. So "!" and "?" before a lower-case word do not
    end one ("un accident! les « happy accidents »"); French spacing changes nothing
    ("Pourquoi ? Parce que." gives two). A lone period does not end an abbreviation
    (:data:`ABBREVIATIONS`: "env. 10 ms"), an initial beside another ("J. S. Bach") or a decimal
    ("3.5 kHz"). A blank line (paragraph break) always ends a sentence; a single line break is
    a space. A piece without letters ("2.", "42 !") belongs to the sentence after it (to the one
    before at the end of the text).
    """
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text or ""):
        paragraph = " ".join(paragraph.split())
        start = 0
        for end in _END.finditer(paragraph):
            nxt = end.end() + 1  # the match is followed by exactly one space
            if not _STARTS.match(paragraph, nxt):
                continue
            if end["punct"] == ".":
                space = paragraph.find(" ", nxt)
                next_word = paragraph[nxt:space] if space >= 0 else paragraph[nxt:]
                if not _period_ends(paragraph[start:end.end()].split(), next_word):
                    continue
            pieces.append(paragraph[start:end.end()])
            start = nxt
        pieces.append(paragraph[start:])
    sentences: list[str] = []
    carry = ""
    for piece in pieces:
        if not piece:
            continue
        if not _LETTER.search(piece):
            carry = f"{carry} {piece}".strip()
            continue
        sentences.append(f"{carry} {piece}" if carry else piece)
        carry = ""
    if carry:
        if sentences:
            sentences[-1] = f"{sentences[-1]} {carry}"
        else:
            sentences.append(carry)
    return sentences
