"""Check the hand-written question sets and the English-French glossary.

    python -m evaluation.check_question_sets [--blog ../shared/data/arsonor/articles.json]

Files checked (JSON lines, UTF-8, one object per line):

- ``evaluation/realstyle_questions.jsonl``: real-style questions about the blog, with
  ``question``, ``lang`` (en|fr), ``articles`` (blog article ids, best first) and ``style``
  (``short|long`` + ``,`` + ``vague|precise``).
- ``evaluation/heldapart_questions.jsonl``: more real-style questions, same fields, kept apart
  from anything the ranker or the tuner trains on (reported separately; never passed to
  ``evaluation.train_ranker`` or ``evaluation.tune``).
- ``evaluation/realstyle_train_questions.jsonl``: training questions for the learned ranker, same
  fields as realstyle; written without reading the held-apart set, so a duplicate of one of its
  questions is an error like any other duplicate.
- ``evaluation/coverage_out_of_scope.jsonl`` and ``evaluation/coverage_demo_out_of_scope.jsonl``:
  questions the blog (resp. the demo corpus ``data/articles.json``) does not answer, with
  ``question``, ``lang``, ``kind`` (off_domain|near_domain) and ``split`` (calibration|held_out).
- ``assistant/glossary_en_fr.json``: ``{"_comment": ..., "terms": {english: [french, ...]}}``.

Errors (exit status 1): invalid JSON, missing or unknown-valued fields, article ids not in the
blog, duplicate questions (within a file, across files, or against the existing cross-lingual and
demo sets), a question sharing a run of 8 words with the blog or demo text, unbalanced languages,
kinds or splits. Warnings (reported, not fatal): a ``lang`` that ``assistant.language`` reads
differently, a ``style`` length that does not look short/long. The report ends with the glossary
entries none of whose French terms occurs in the blog text (compared after the product's French
analysis, so plurals and accents do not count as differences). The blog's data is not in the repository:
without it, the checks that need it are skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from assistant.engines.analysis import analyze
from assistant.language import detect_language

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BLOG = ROOT.parent / "shared" / "data" / "arsonor" / "articles.json"
DEMO = ROOT / "data" / "articles.json"
REALSTYLE = ROOT / "evaluation" / "realstyle_questions.jsonl"
HELDAPART = ROOT / "evaluation" / "heldapart_questions.jsonl"
REALSTYLE_TRAIN = ROOT / "evaluation" / "realstyle_train_questions.jsonl"
COVERAGE = ROOT / "evaluation" / "coverage_out_of_scope.jsonl"
COVERAGE_DEMO = ROOT / "evaluation" / "coverage_demo_out_of_scope.jsonl"
EXISTING = [ROOT / "evaluation" / "crosslingual_questions.jsonl", ROOT / "evaluation" / "demo_questions.jsonl"]
GLOSSARY = ROOT / "assistant" / "glossary_en_fr.json"

RUN = 8  # a question may not share this many consecutive words with a corpus
LANGS = {"en", "fr"}
KINDS = {"off_domain", "near_domain"}
SPLITS = {"calibration", "held_out"}
STYLES = {f"{a},{b}" for a in ("short", "long") for b in ("vague", "precise")}
SHORT_MAX, LONG_MIN = 16, 18  # words; only a warning
CALIBRATION_SHARE = (0.55, 0.65)
MIN_GLOSSARY = 150

_TOKEN = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lower case, accents removed, apostrophes unified."""
    text = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(fold(text))


def norm_question(text: str) -> str:
    return " ".join(tokens(text))


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def read_jsonl(path: Path, rep: Report) -> list[dict]:
    rows = []
    if not path.is_file():
        rep.error(f"{path.name}: missing")
        return rows
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        rep.error(f"{path.name}: not UTF-8 ({exc})")
        return rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            rep.error(f"{path.name}:{n}: blank line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rep.error(f"{path.name}:{n}: invalid JSON ({exc})")
            continue
        if not isinstance(row, dict):
            rep.error(f"{path.name}:{n}: not an object")
            continue
        row["_line"] = n
        rows.append(row)
    return rows


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def corpus_ngrams(articles: list[dict], n: int) -> set[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for a in articles:
        for field in ("title", "text"):
            grams |= ngrams(tokens(a.get(field) or ""), n)
    return grams


def check_common(name: str, rows: list[dict], required: list[str], rep: Report) -> None:
    for r in rows:
        where = f"{name}:{r['_line']}"
        for key in required:
            if key not in r or r[key] in ("", None, []):
                rep.error(f"{where}: missing {key!r}")
        q = r.get("question")
        if not isinstance(q, str) or not q.strip():
            continue
        if q != q.strip():
            rep.error(f"{where}: question has leading/trailing spaces")
        if r.get("lang") not in LANGS:
            rep.error(f"{where}: lang {r.get('lang')!r} not en/fr")
        elif detect_language(q) != r["lang"]:
            rep.warn(f"{where}: labelled {r['lang']} but assistant.language reads {detect_language(q)}: {q}")
    langs = Counter(r.get("lang") for r in rows)
    if abs(langs["en"] - langs["fr"]) > 1:
        rep.error(f"{name}: languages unbalanced {dict(langs)}")


def check_realstyle(rows: list[dict], blog_ids: set[str] | None, rep: Report,
                    name: str = REALSTYLE.name) -> dict:
    check_common(name, rows, ["question", "lang", "articles", "style"], rep)
    covered: Counter = Counter()
    first: Counter = Counter()
    for r in rows:
        where = f"{name}:{r['_line']}"
        arts = r.get("articles")
        if not isinstance(arts, list) or not all(isinstance(a, str) for a in arts):
            rep.error(f"{where}: articles must be a list of ids")
            continue
        if len(set(arts)) != len(arts):
            rep.error(f"{where}: repeated article id")
        if blog_ids is not None:
            for a in arts:
                if a not in blog_ids:
                    rep.error(f"{where}: unknown article id {a}")
        covered.update(set(arts))
        if arts:
            first[arts[0]] += 1
        style = r.get("style")
        if style not in STYLES:
            rep.error(f"{where}: style {style!r} not in {sorted(STYLES)}")
            continue
        n = len(r["question"].split())
        if style.startswith("short") and n > SHORT_MAX:
            rep.warn(f"{where}: style short but {n} words")
        if style.startswith("long") and n < LONG_MIN:
            rep.warn(f"{where}: style long but {n} words")
    return {"covered": covered, "first": first}


def check_coverage(path: Path, rows: list[dict], rep: Report) -> None:
    name = path.name
    check_common(name, rows, ["question", "lang", "kind", "split"], rep)
    for r in rows:
        where = f"{name}:{r['_line']}"
        if r.get("kind") not in KINDS:
            rep.error(f"{where}: kind {r.get('kind')!r} not in {sorted(KINDS)}")
        if r.get("split") not in SPLITS:
            rep.error(f"{where}: split {r.get('split')!r} not in {sorted(SPLITS)}")
        if "articles" in r:
            rep.error(f"{where}: out-of-scope question with articles")
    cells = Counter((r.get("lang"), r.get("kind")) for r in rows)
    sizes = set(cells.values())
    if len(cells) != 4 or max(sizes) - min(sizes) > 1:
        rep.error(f"{name}: lang x kind cells unbalanced {dict(cells)}")
    for cell in cells:
        in_cell = [r for r in rows if (r.get("lang"), r.get("kind")) == cell]
        share = sum(r.get("split") == "calibration" for r in in_cell) / len(in_cell)
        if not CALIBRATION_SHARE[0] <= share <= CALIBRATION_SHARE[1]:
            rep.error(f"{name}: calibration share {share:.2f} in {cell}")


def check_duplicates(files: dict[str, list[dict]], existing: list[dict], rep: Report) -> None:
    seen: dict[str, str] = {}
    for r in existing:
        seen.setdefault(norm_question(r.get("question", "")), f"{r['_file']}:{r['_line']}")
    for name, rows in files.items():
        for r in rows:
            key = norm_question(r.get("question", ""))
            where = f"{name}:{r['_line']}"
            if key in seen:
                rep.error(f"{where}: duplicate of {seen[key]}")
            else:
                seen[key] = where


def check_copies(files: dict[str, list[dict]], corpora: dict[str, set], rep: Report) -> None:
    for name, rows in files.items():
        for r in rows:
            grams = ngrams(tokens(r.get("question", "")), RUN)
            for corpus, cgrams in corpora.items():
                shared = grams & cgrams
                if shared:
                    rep.error(f"{name}:{r['_line']}: shares {RUN} words with {corpus}: {' '.join(min(shared))}")


def check_glossary(blog_text: str | None, rep: Report) -> dict:
    info: dict = {}
    if not GLOSSARY.is_file():
        rep.error(f"{GLOSSARY.name}: missing")
        return info
    try:
        data = json.loads(GLOSSARY.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        rep.error(f"{GLOSSARY.name}: not valid UTF-8 JSON ({exc})")
        return info
    if not isinstance(data, dict) or not isinstance(data.get("_comment"), str) or not isinstance(data.get("terms"), dict):
        rep.error(f"{GLOSSARY.name}: expected {{'_comment': str, 'terms': {{...}}}}")
        return info
    terms = data["terms"]
    if len(terms) < MIN_GLOSSARY:
        rep.error(f"{GLOSSARY.name}: {len(terms)} entries, fewer than {MIN_GLOSSARY}")
    absent, partly = [], []
    # "Occurs" as BM25 sees it: the product's French analysis (stop words, light stemming, folding),
    # the French term's terms consecutive in the blog's.
    folded_blog = " " + " ".join(analyze(blog_text)) + " " if blog_text else None
    for en, frs in terms.items():
        if en != en.strip().lower() or not en:
            rep.error(f"{GLOSSARY.name}: key {en!r} not lower case / trimmed")
        if not isinstance(frs, list) or not frs or not all(isinstance(f, str) and f.strip() for f in frs):
            rep.error(f"{GLOSSARY.name}: {en!r} needs a non-empty list of French terms")
            continue
        if len(set(frs)) != len(frs):
            rep.error(f"{GLOSSARY.name}: {en!r} repeats a French term")
        if folded_blog is not None:
            found = [f for f in frs if analyze(f) and f" {' '.join(analyze(f))} " in folded_blog]
            if not found:
                absent.append(en)
            elif len(found) < len(frs):
                partly.append((en, [f for f in frs if f not in found]))
    info.update(size=len(terms), absent=absent, partly=partly, checked=folded_blog is not None)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.check_question_sets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--blog", default=str(DEFAULT_BLOG), help="the blog's articles.json")
    parser.add_argument("--verbose", action="store_true", help="list glossary entries with some French terms absent")
    args = parser.parse_args(argv)
    rep = Report()

    blog_path = Path(args.blog)
    blog = json.loads(blog_path.read_text(encoding="utf-8")) if blog_path.is_file() else None
    if blog is None:
        print(f"note: {blog_path} not found; article ids, blog copies and glossary vocabulary not checked")
    demo = json.loads(DEMO.read_text(encoding="utf-8"))

    files = {p.name: read_jsonl(p, rep) for p in (REALSTYLE, HELDAPART, REALSTYLE_TRAIN, COVERAGE, COVERAGE_DEMO)}
    existing = []
    for p in EXISTING:
        for r in read_jsonl(p, rep):
            r["_file"] = p.name
            existing.append(r)

    stats = check_realstyle(files[REALSTYLE.name], {a["article_id"] for a in blog} if blog else None, rep)
    held = check_realstyle(files[HELDAPART.name], {a["article_id"] for a in blog} if blog else None,
                           rep, HELDAPART.name)
    train = check_realstyle(files[REALSTYLE_TRAIN.name], {a["article_id"] for a in blog} if blog else None,
                            rep, REALSTYLE_TRAIN.name)
    check_coverage(COVERAGE, files[COVERAGE.name], rep)
    check_coverage(COVERAGE_DEMO, files[COVERAGE_DEMO.name], rep)
    check_duplicates(files, existing, rep)
    corpora = {"data/articles.json (demo)": corpus_ngrams(demo, RUN)}
    if blog:
        corpora["blog articles.json"] = corpus_ngrams(blog, RUN)
    check_copies(files, corpora, rep)
    gloss = check_glossary(" ".join(a["text"] + " " + a["title"] for a in blog) if blog else None, rep)

    for name, rows in files.items():
        print(f"{name}: {len(rows)} questions")
        for key in ("lang", "style", "kind", "split"):
            c = Counter(r.get(key) for r in rows if key in r)
            if c:
                print(f"  {key}: {dict(sorted(c.items()))}")
        if rows and "kind" in rows[0]:
            cells = Counter((r.get("lang"), r.get("kind"), r.get("split")) for r in rows)
            print("  lang x kind x split: " + ", ".join(f"{l}/{k}/{s}={n}" for (l, k, s), n in sorted(cells.items())))
    if blog:
        ids = [a["article_id"] for a in blog]
        print(f"realstyle: {len(stats['covered'])}/{len(ids)} blog articles relevant to some question, "
              f"{len(stats['first'])} as the best one")
        missing = [i for i in ids if i not in stats["covered"]]
        if missing:
            print(f"  never relevant: {' '.join(missing)}")
        print(f"heldapart: {len(held['covered'])}/{len(ids)} blog articles relevant to some question")
        print(f"realstyle_train: {len(train['covered'])}/{len(ids)} blog articles relevant to some question, "
              f"{len(train['first'])} as the best one")
        missing = [i for i in ids if i not in train["covered"]]
        if missing:
            print(f"  never relevant: {' '.join(missing)}")
    if gloss:
        print(f"glossary: {gloss['size']} entries")
        if gloss.get("checked"):
            print(f"  entries with no French term in the blog text ({len(gloss['absent'])}): {', '.join(gloss['absent'])}")
            if args.verbose:
                for en, miss in gloss["partly"]:
                    print(f"  {en}: not in blog: {', '.join(miss)}")
    for w in rep.warnings:
        print(f"warning: {w}")
    for e in rep.errors:
        print(f"ERROR: {e}")
    print(f"{len(rep.errors)} error(s), {len(rep.warnings)} warning(s)")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
