"""What the trainers of learned parts (``train_ranker``, ``train_adapter``) share: the held-out
split, their common arguments, and the run they learn from.

The split is a hash of the question text, so a question is held out by every trainer and by
``evaluation.retrieval --held-out`` alike, whatever file it comes from."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from assistant.config import load_json_config, load_settings
from assistant.documents import Chunk
from assistant.retrieval import RetrievalConfig, Retriever
from evaluation.retrieval import AnswerKey, Question, open_eval_retriever, read_questions
from indexing.sources import load_chunks

HOLDOUT = 0.25


def held_out(question: str, share: float = HOLDOUT) -> bool:
    """Whether this question is in the part the trainers never train on (stable: a hash)."""
    digest = hashlib.sha256(question.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2 ** 32 < share


def training_parser(prog: str, description: str, default_out: Path) -> argparse.ArgumentParser:
    """A parser with the arguments every trainer takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--chunks", required=True, help="articles JSON or chunks JSON")
    parser.add_argument("--questions", required=True, action="append",
                        help="questions file (repeat); chunk-level CSV or article-level JSON lines")
    parser.add_argument("--out", default=str(default_out), help="model file to write")
    parser.add_argument("--holdout", type=float, default=HOLDOUT,
                        help="share of each set held out (not trained on)")
    parser.add_argument("--limit", type=int, help="only the first N questions of each set")
    return parser


def check_holdout(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.holdout < 1:
        parser.error("--holdout must be between 0 and 1")


@dataclass
class TrainingRun:
    """The configured search without learned parts, over an index of exactly the chunks."""

    config: RetrievalConfig
    chunks: list[Chunk]
    sets: dict[str, list[Question]]  # file name -> its questions
    retriever: Retriever

    @property
    def key(self) -> AnswerKey:
        return AnswerKey.from_chunks(self.chunks)

    @property
    def index_model(self) -> str:
        """The index recipe the learned part is trained for."""
        return self.retriever.engine.info().model


def open_training_run(args: argparse.Namespace) -> TrainingRun:
    """The run a trainer learns from: the configuration with no ranker and no query adapter
    (their files may not exist yet), the chunks, the question sets and an embedded index of
    the chunks. Raises :class:`AssistantError` subclasses for bad inputs."""
    settings = load_settings()
    config = replace(RetrievalConfig.from_dict(load_json_config(settings.retrieval_config_file)),
                     ranker="", query_adapter="")
    chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
    sets = {Path(p).name: read_questions(p)[: args.limit] for p in args.questions}
    retriever = open_eval_retriever(chunks, "embedded", settings, config, progress=False)
    return TrainingRun(config, chunks, sets, retriever)
