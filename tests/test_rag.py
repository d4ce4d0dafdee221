"""The answering flow (``assistant.answering.rag``) without the web layer: rewrites, streamed
citation filtering, logging of failed and cancelled exchanges, follow-ups while the log is
down, and the judge (worker and batch) against the OpenAI stub."""

from __future__ import annotations

import random

import pytest

from assistant.answering.judge import JudgeWorker, judge, judge_pending
from assistant.answering.llm import LLMClient, LLMUnavailable
from assistant.answering.prompts import strip_invalid_citations
from assistant.answering.conversations import ConversationUnavailable
from assistant.answering.rag import Assistant
from assistant.answering.request import Ask, normalise_category, normalise_id
from assistant.answering.rewrite import clean_rewrite, simple_rewrite
from assistant.answering.streaming import CitationFilter
from assistant.conversation_log import open_store
from assistant.errors import EngineUnavailable, InvalidQuestion, UnknownConversation
from assistant.services import Services
from evaluation.ports import free_port
from evaluation.openai_stub import status

# -- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize("previous, follow_up, expected", [
    ("Qu'est-ce qu'un VCO ?", "et le filtre ?", "VCO — et le filtre ?"),
    ("Comment régler l'attaque du compresseur ?", "et le ratio ?", "régler attaque compresseur — et le ratio ?"),
    ("What is a VCO?", "what about the VCO waveforms?", "what about the VCO waveforms?"),
    ("?", "et ensuite ?", "et ensuite ?"),
    ("Qu'est-ce que le de-esser ?", "comment le régler ?", "de-esser — comment le régler ?"),
])
def test_simple_rewrite(previous, follow_up, expected):
    assert simple_rewrite(previous, follow_up) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Comment régler la résonance du VCF ?", "Comment régler la résonance du VCF ?"),
    ('"Comment régler la résonance ?"', "Comment régler la résonance ?"),
    ("Question: What is a VCO?\n", "What is a VCO?"),
    ("\n\n« Et la reverb ? »\nextra line", "Et la reverb ?"),
    ("", ""),
])
def test_clean_rewrite(raw, expected):
    assert clean_rewrite(raw) == expected


def test_normalisers():
    assert normalise_id("0123456789ABCDEF0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    assert normalise_id("01234567-89ab-cdef-0123-456789abcdef") == "0123456789abcdef0123456789abcdef"
    for bad in ("", "abc", "g" * 32, 12, None):
        with pytest.raises(InvalidQuestion):
            normalise_id(bad)
    assert normalise_category(" la  post-prod ") == "LA POST-PROD"
    assert normalise_category(None) is None
    with pytest.raises(InvalidQuestion):
        normalise_category("JAZZ")


TEXTS = [
    "Le VCO produit l'onde [1]. Le filtre la sculpte [8], puis l'enveloppe [2][7] la façonne.",
    "Premier point [1]. Deuxième [6]. Troisième [0], quatrième [2, 7] et [3-9].",
    "Sans citation du tout.",
    "[7] Une citation en tête, puis [1] et une à la fin [9]",
    "Un crochet [non fermé et [2] puis [12] fin.",
    "Liste :\n- point un [1]\n- point deux [6]\n- point trois [3]",
]


@pytest.mark.parametrize("text", TEXTS)
def test_citation_filter_streams_exactly_the_stripped_answer(text):
    rng = random.Random(text)
    for _ in range(40):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        f = CitationFilter(5)
        streamed = "".join(f.feed(p) for p in pieces) + f.flush()
        assert streamed == strip_invalid_citations(text, 5), pieces


# -- the flow over the demo index ------------------------------------------------------------


@pytest.fixture
def settings(demo_index_settings, tmp_path):
    return demo_index_settings.replace(data_dir=str(tmp_path / "var"))


@pytest.fixture
def retriever(demo_index_settings):
    with Services(demo_index_settings) as services:
        yield services.retriever


def llm_for(stub, retries: int = 0) -> LLMClient:
    return LLMClient(api_key="sk-test", base_url=stub.url, model="gpt-4o-mini", max_retries=retries,
                     backoff=0.01)


def test_extractive_follow_up_is_logged_as_turn_two(settings, retriever):
    store = open_store("", data_dir=settings.data_dir)
    assistant = Assistant(retriever, None, store)
    first = assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    second = assistant.answer(Ask.parse("et le filtre ?", first.conversation_id))
    assert second.rewritten_question == "VCO — et le filtre ?"
    assert (first.turn, second.turn) == (1, 2)
    third = assistant.answer(Ask.parse("et sa résonance ?", first.conversation_id))
    assert third.rewritten_question == "VCO filtre — et sa résonance ?"  # the topic carries on
    history = store.history(first.conversation_id)
    assert [(e.turn, e.rewritten_question) for e in history] == [
        (1, None), (2, "VCO — et le filtre ?"), (3, "VCO filtre — et sa résonance ?")]
    with pytest.raises(UnknownConversation):
        assistant.answer(Ask.parse("et ensuite ?", "e" * 32))


def test_follow_up_continues_from_memory_while_the_log_is_down(settings, retriever):
    store = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/down", data_dir=settings.data_dir)
    assistant = Assistant(retriever, None, store)
    first = assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    assert first.logged is False  # spooled
    second = assistant.answer(Ask.parse("et le filtre ?", first.conversation_id))
    assert second.turn == 2 and second.rewritten_question.startswith("VCO")
    assert store.spooled() == 2
    # A conversation this process never saw cannot be continued while the log is down.
    with pytest.raises(ConversationUnavailable):
        assistant.answer(Ask.parse("et ensuite ?", "d" * 32))


def test_engine_failure_is_logged(settings):
    store = open_store("", data_dir=settings.data_dir)

    def no_engine():
        raise EngineUnavailable("the embedded index is empty: build it first with `assistant index`")

    assistant = Assistant(no_engine, None, store)
    with pytest.raises(EngineUnavailable) as caught:
        assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    stored = store.get(caught.value.exchange_id)
    assert stored.status == "engine_error" and "index is empty" in stored.error
    assert stored.question == "Qu'est-ce qu'un VCO ?" and stored.answer is None


class _BrokenEngine:
    """An engine failing in a way nobody planned for (not an EngineError)."""

    name = "broken"

    def lexical_search(self, *args, **kwargs):
        raise ZeroDivisionError("division by zero deep inside the engine")

    def close(self):
        pass


@pytest.mark.parametrize("stream", [False, True])
def test_an_unexpected_failure_is_logged_as_error(settings, stream):
    from assistant.retrieval import Retriever

    store = open_store("", data_dir=settings.data_dir)
    assistant = Assistant(Retriever(_BrokenEngine(), lambda q: None), None, store)
    ask = Ask.parse("Qu'est-ce qu'un VCO ?")
    with pytest.raises(ZeroDivisionError):
        assistant.answer_stream(ask) if stream else assistant.answer(ask)
    [stored] = store.recent(5)
    assert stored.status == "error" and "ZeroDivisionError" in stored.error
    assert stored.question == "Qu'est-ce qu'un VCO ?" and stored.answer is None


def test_llm_failure_during_a_stream_is_logged(settings, retriever, openai_stub):
    store = open_store("", data_dir=settings.data_dir)
    openai_stub.script(status(503))
    assistant = Assistant(retriever, llm_for(openai_stub), store)
    events = assistant.answer_stream(Ask.parse("Qu'est-ce qu'un VCO ?"))
    assert next(events)[0] == "sources"
    with pytest.raises(LLMUnavailable) as caught:
        next(events)
    stored = store.get(caught.value.exchange_id)
    assert stored.status == "llm_error" and "503" in stored.error
    assert len(stored.sources) == 5


def test_a_stream_abandoned_by_the_reader_is_logged_as_cancelled(settings, retriever, openai_stub):
    store = open_store("", data_dir=settings.data_dir)
    openai_stub.reply = "Un VCO est un oscillateur commandé en tension, la source du son [1]."
    assistant = Assistant(retriever, llm_for(openai_stub), store)
    events = assistant.answer_stream(Ask.parse("Qu'est-ce qu'un VCO ?"))
    name, first = next(events)
    assert name == "sources"
    assert next(events)[0] == "token"
    events.close()
    [stored] = store.history(first["conversation_id"])
    assert stored.status == "cancelled" and stored.answer.startswith("Un")


def test_no_llm_call_when_nothing_is_retrieved(settings, retriever, openai_stub):
    store = open_store("", data_dir=settings.data_dir)
    assistant = Assistant(retriever, llm_for(openai_stub), store, top_k=0)
    result = assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    assert result.sources == []
    assert result.answer.startswith("Je n'ai pas trouvé")
    assert openai_stub.requests == []


def test_sources_are_the_numbered_passages(settings, retriever, openai_stub, llm_reply):
    openai_stub.reply = llm_reply()
    assistant = Assistant(retriever, llm_for(openai_stub), None)
    result = assistant.answer(Ask.parse("Comment régler un compresseur ?", category="LA POST-PROD"))
    passages = retriever.search("Comment régler un compresseur ?", 5, category="LA POST-PROD").passages
    numbered = sorted((p["n"], p["chunk_id"]) for s in result.sources for p in s["passages"])
    assert numbered == [(n, p.chunk.chunk_id) for n, p in enumerate(passages, 1)]
    prompt = openai_stub.requests[0]["messages"][-1]["content"]
    positions = [prompt.index(f"[{n}] {p.chunk.title}") for n, p in enumerate(passages, 1)]
    assert positions == sorted(positions)
    assert result.category == "LA POST-PROD"


# -- judge -----------------------------------------------------------------------------------


def test_judge_parses_the_verdict(openai_stub, llm_reply):
    openai_stub.reply = llm_reply(relevance="NON_RELEVANT")
    relevance, explanation, usage = judge(llm_for(openai_stub), "Qu'est-ce qu'un VCO ?", "Je ne sais pas.")
    assert (relevance, explanation) == ("NON_RELEVANT", "stub verdict")
    assert usage.prompt_tokens > 0 and usage.known


def test_judge_worker_and_batch(settings, retriever, openai_stub, llm_reply):
    openai_stub.reply = llm_reply()
    store = open_store("", data_dir=settings.data_dir)
    llm = llm_for(openai_stub)
    assistant = Assistant(retriever, llm, store, judge=JudgeWorker(llm, store))
    result = assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    assert assistant.judge.wait_idle(20)
    assert store.get(result.exchange_id).relevance == "RELEVANT"
    assistant.judge.close()

    # Exchanges logged without a judge are picked up by the batch.
    unjudged = Assistant(retriever, llm, store)
    unjudged.answer(Ask.parse("Comment placer ses enceintes ?"))
    unjudged.answer(Ask.parse("Quel micro pour une voix ?"))
    openai_stub.script(status(400, message="bad judge request"))  # the first one fails
    report = judge_pending(llm, store, limit=10)
    assert (report.judged, report.failed) == (1, 1)
    report = judge_pending(llm, store, limit=10)
    assert (report.judged, report.failed) == (1, 0)
    assert store.exchanges_without_relevance() == []
    assert sum(e.relevance == "RELEVANT" for e in store.recent(100)) == 3


def test_judge_worker_survives_failures(settings, openai_stub):
    store = open_store("", data_dir=settings.data_dir)
    worker = JudgeWorker(llm_for(openai_stub), store)
    openai_stub.reply = "not a verdict"
    assert worker.submit("nope", "q", "a")
    assert worker.wait_idle(10)
    assert (worker.judged, worker.failed) == (0, 1)
    worker.close()
