"""Coverage gate evaluation (and calibration): how many out-of-scope questions are declined,
how many in-scope questions are answered, on the calibration and held-out parts apart.

    python -m evaluation.coverage --chunks FILE --in-scope FILE [--in-scope FILE ...] \\
        --out-of-scope FILE [--json] [--calibrate] [--out evaluation/reports/coverage]

``--in-scope``: JSON lines (``question``, ``lang``) or a ground-truth CSV (``question``; a
deterministic sample of ``--csv-sample`` rows is taken). ``--out-of-scope``: JSON lines with
``question``, ``lang``, ``kind`` (off_domain|near_domain) and ``split`` (calibration|held_out).
In-scope files have no split: a question is held out when the first hex digit of the sha1 of
its text is odd (stable across runs and files).

``--calibrate`` fits the gate on the calibration part (a logistic regression over the gate's
features, :mod:`assistant.answering.coverage`), puts the threshold where at least
``--answered-target`` of the calibration's in-scope questions are answered, and writes the
``"coverage"`` block of the retrieval configuration (``--config``, default the product's
``assistant/retrieval.json``) for the embedder in use. Without it, the calibration already in
that file is measured. Either way the report (markdown + the threshold curve) goes to ``--out``.

The one-line calibration the lead re-runs after a ranker change (blog data outside the repo):

    EMBEDDING_CACHE=/work/cache/embeddings.sqlite python -m evaluation.coverage --calibrate \\
        --chunks ../shared/data/arsonor/chunks_300_50.json \\
        --in-scope evaluation/realstyle_questions.jsonl \\
        --in-scope evaluation/crosslingual_questions.jsonl \\
        --in-scope ../shared/data/arsonor/ground_truth_dev.csv \\
        --out-of-scope evaluation/coverage_out_of_scope.jsonl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.answering.coverage import FEATURES, Calibration, CoverageGate, calibration_for
from assistant.config import load_json_config, load_settings
from assistant.embeddings import EmbeddingCache, embed_passages_cached, embedder_from_settings
from assistant.errors import AssistantError, SourceError
from assistant.language import detect_language
from assistant.retrieval import RetrievalConfig
from evaluation.retrieval import open_eval_retriever
from indexing.sources import load_chunks

KINDS = ("in_scope", "off_domain", "near_domain")


@dataclass(frozen=True)
class Item:
    question: str
    kind: str  # in_scope | off_domain | near_domain
    lang: str
    split: str  # calibration | held_out


def _split_of(question: str) -> str:
    return "held_out" if int(hashlib.sha1(question.encode()).hexdigest()[0], 16) % 2 else "calibration"


def read_items(path: str, in_scope: bool, csv_sample: int = 200, seed: int = 8) -> list[Item]:
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"questions file not found: {p}")
    items = []
    if p.suffix.lower() == ".csv":
        rows = [r for r in csv.DictReader(p.read_text(encoding="utf-8").splitlines())
                if (r.get("question") or "").strip()]
        random.Random(seed).shuffle(rows)
        for r in rows[:csv_sample]:
            q = r["question"].strip()
            items.append(Item(q, "in_scope", detect_language(q), _split_of(q)))
        return items
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        q = str(row.get("question") or "").strip()
        if not q:
            raise SourceError(f"{p}:{n}: no question")
        lang = row.get("lang") or detect_language(q)
        if in_scope:
            items.append(Item(q, "in_scope", lang, row.get("split") or _split_of(q)))
        else:
            kind = row.get("kind", "off_domain")
            if kind not in KINDS[1:] or row.get("split") not in ("calibration", "held_out"):
                raise SourceError(f"{p}:{n}: kind must be off_domain|near_domain and split "
                                  "calibration|held_out")
            items.append(Item(q, kind, lang, row["split"]))
    return items


def fit(features: np.ndarray, labels: np.ndarray, languages: list[str], target: float,
        related_cosine: float, comment: str, regularisation: float = 10.0) -> Calibration:
    """Logistic regression on standardised features; per language, the highest threshold that
    still answers ``target`` of that language's in-scope questions."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=regularisation, class_weight="balanced", max_iter=3000)
    model.fit((features - mean) / scale, labels)
    calibration = Calibration(tuple(model.coef_[0]), float(model.intercept_[0]), tuple(mean),
                              tuple(scale), {"fr": 0.5}, related_cosine, comment)
    thresholds = {}
    for lang in ("fr", "en"):
        rows = [i for i in range(len(labels)) if labels[i] == 1 and languages[i] == lang]
        scores = np.sort([calibration.score(features[i]) for i in rows])
        refused = int(np.floor((1 - target) * len(scores) + 1e-9))
        thresholds[lang] = max(0.0, float(scores[refused]) - 1e-6) if len(scores) else 0.5
    return Calibration(calibration.coefficients, calibration.intercept, calibration.mean,
                       calibration.scale, thresholds, related_cosine, comment)


def gate_language(row) -> str:
    """The language the gate reads in a question (its ``english`` feature), as the product."""
    return "en" if row[FEATURES.index("english")] else "fr"


def covered_by(languages: list[str], scores: np.ndarray, calibration: Calibration,
               shift: float = 0.0) -> np.ndarray:
    """Whether each question counts as covered (its language's threshold, moved by ``shift``)."""
    return np.array([s >= calibration.threshold(lang) + shift
                     for lang, s in zip(languages, scores)], dtype=bool)


def rates(items: list[Item], covered_all: np.ndarray) -> dict:
    """Share answered (in scope) / declined (out of scope) per kind and language."""
    out: dict = {}
    for kind in KINDS:
        for lang in ("all", "en", "fr"):
            idx = [i for i, it in enumerate(items) if it.kind == kind and (lang == "all" or it.lang == lang)]
            if not idx:
                continue
            covered = covered_all[idx]
            share = covered.mean() if kind == "in_scope" else 1 - covered.mean()
            out.setdefault(kind, {})[lang] = {"n": len(idx), ("answered" if kind == "in_scope" else "declined"): round(float(share), 4)}
    return out


def curve(items: list[Item], languages: list[str], scores: np.ndarray,
          calibration: Calibration) -> list[dict]:
    """The shares as both thresholds move together by a shift from -0.5 to +0.5."""
    points = []
    for shift in np.linspace(-0.5, 0.5, 101):
        row = {"shift": round(float(shift), 2)}
        covered_all = covered_by(languages, scores, calibration, shift)
        for kind in KINDS:
            idx = [i for i, it in enumerate(items) if it.kind == kind]
            if idx:
                covered = covered_all[idx].mean()
                row[kind] = round(float(covered if kind == "in_scope" else 1 - covered), 4)
        points.append(row)
    return points


def write_report(out: Path, title: str, results: dict, held: list[Item], held_languages: list[str],
                 held_scores: np.ndarray, calibration: Calibration, timing_ms: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    points = curve(held, held_languages, held_scores, calibration)
    fig, axis = plt.subplots(figsize=(7, 4.2))
    xs = [p["shift"] for p in points]
    labels = {"in_scope": "in-scope answered", "off_domain": "off-domain declined",
              "near_domain": "near-domain declined"}
    for kind in KINDS:
        if kind in points[0]:
            axis.plot(xs, [p[kind] for p in points], label=labels[kind])
    thresholds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(calibration.thresholds.items()))
    axis.axvline(0, color="grey", linestyle="--", label=f"chosen thresholds ({thresholds})")
    axis.axhline(0.975, color="tab:blue", linestyle=":", linewidth=0.8)
    axis.axhline(0.95, color="tab:orange", linestyle=":", linewidth=0.8)
    axis.axhline(0.70, color="tab:green", linestyle=":", linewidth=0.8)
    axis.set_xlabel("shift added to both thresholds (covered when score ≥ threshold + shift)")
    axis.set_ylim(0, 1.02)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title(f"Coverage trade-off, held-out part\n{title.split(';')[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=120)
    lines = ["# Coverage gate report", "", title, "",
             f"Thresholds {thresholds} (gate score = logistic regression over {', '.join(FEATURES)}); "
             f"gate time p50 {timing_ms:.2f} ms per question.", "",
             "| part | kind | language | n | share |", "|---|---|---|---|---|"]
    for part, figures in results.items():
        for kind, by_lang in figures.items():
            for lang, f in by_lang.items():
                share = f.get("answered", f.get("declined"))
                verb = "answered" if kind == "in_scope" else "declined"
                lines.append(f"| {part} | {kind} | {lang} | {f['n']} | {verb} {share:.3f} |")
    lines += ["", "![coverage trade-off](coverage.png)", "", "Coefficients (standardised features):", ""]
    lines += [f"- {name}: {c:+.3f}" for name, c in zip(FEATURES, calibration.coefficients)]
    lines.append("")
    path = out / "coverage.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.coverage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", required=True, help="articles JSON or chunks JSON")
    parser.add_argument("--in-scope", action="append", required=True, help="JSON lines or CSV (repeatable)")
    parser.add_argument("--out-of-scope", required=True, help="JSON lines with kind and split")
    parser.add_argument("--csv-sample", type=int, default=200, help="rows drawn from a CSV in-scope file")
    parser.add_argument("--calibrate", action="store_true", help="fit the gate and write it to --config")
    parser.add_argument("--answered-target", type=float, default=0.985,
                        help="share of calibration in-scope questions the threshold must answer")
    parser.add_argument("--config", help="retrieval configuration JSON (default: the product's)")
    parser.add_argument("--out", default="evaluation/reports/coverage", help="report directory")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 0.5 <= args.answered_target <= 1.0:
        parser.error("--answered-target must be within [0.5, 1]")
    if args.csv_sample < 1:
        parser.error("--csv-sample must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        config_path = Path(args.config or settings.retrieval_config_file)
        config = RetrievalConfig.load(config_path)
        raw_config = load_json_config(config_path)
        chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
        items = [it for f in args.in_scope for it in read_items(f, True, args.csv_sample)]
        items += read_items(args.out_of_scope, False)
        retriever = open_eval_retriever(chunks, "embedded", settings, config, progress=not args.json)
        embedder = embedder_from_settings(settings)
        cache = EmbeddingCache(settings.embedding_cache_file)
        gate = CoverageGate(retriever, lambda texts: embed_passages_cached(
            embedder, texts, cache, progress=False)[0], None)
        gate.warm_up()
        rows, times = [], []
        for it in items:
            retriever.embed_query(it.question)  # as in the product: the vector is memoised
            t = time.perf_counter()
            rows.append(gate.evidence(it.question).values)
            times.append(time.perf_counter() - t)
        features = np.array(rows, dtype=np.float64)
        labels = np.array([it.kind == "in_scope" for it in items], dtype=int)
        calib = np.array([it.split == "calibration" for it in items])
        if args.calibrate:
            in_best = features[(labels == 1) & calib][:, FEATURES.index("best_cosine")]
            related = float(np.quantile(in_best, 0.10))  # as close as 90 % of real questions
            languages = [gate_language(row) for row in features[calib]]
            calibration = fit(features[calib], labels[calib], languages, args.answered_target,
                              related,
                              f"Fitted by `python -m evaluation.coverage --calibrate` on "
                              f"{Path(args.chunks).name} ({int(calib.sum())} calibration questions); "
                              f"threshold answers {args.answered_target:.1%} of their in-scope part.")
            block = dict(raw_config.get("coverage") or {})
            block[embedder.name] = calibration.to_dict()
            calibration = Calibration.from_dict(block[embedder.name])  # measure what is stored
            raw_config["coverage"] = block
            config_path.write_text(json.dumps(raw_config, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
        else:
            calibration = calibration_for(raw_config.get("coverage"), embedder.name)
            if calibration is None:
                raise AssistantError(f"{config_path} has no coverage calibration for "
                                     f"{embedder.name}: run with --calibrate first")
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scores = np.array([calibration.score(row) for row in features])
    languages = [gate_language(row) for row in features]
    covered = covered_by(languages, scores, calibration)
    results = {}
    for part in ("calibration", "held_out"):
        idx = [i for i, it in enumerate(items) if it.split == part]
        results[part] = rates([items[i] for i in idx], covered[idx])
    held_idx = [i for i, it in enumerate(items) if it.split == "held_out"]
    timing_ms = float(np.median(times) * 1000)
    title = (f"{Path(args.chunks).name}, {len(chunks)} chunks, embedder {embedder.name}; in-scope: "
             f"{', '.join(Path(f).name for f in args.in_scope)}; out-of-scope: {Path(args.out_of_scope).name}")
    report = write_report(Path(args.out), title, results, [items[i] for i in held_idx],
                          [languages[i] for i in held_idx], scores[held_idx], calibration,
                          timing_ms)
    figures = {"thresholds": calibration.thresholds, "results": results,
               "gate_ms_p50": round(timing_ms, 3), "gate_ms_p95": round(float(np.quantile(times, 0.95) * 1000), 3),
               "report": str(report)}
    if args.json:
        print(json.dumps(figures))
    else:
        print(Path(report).read_text(encoding="utf-8"))
    retriever.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
