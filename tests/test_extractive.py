"""Extractive answers (no LLM) from realistic French passages."""

from __future__ import annotations

import re

import numpy as np

from assistant.answering.extractive import NO_MATCH, detect_language, extractive_answer

PASSAGES = [
    {"title": "Bien régler son compresseur",
     "url": "https://arsonor.com/compresseur",
     "text": "Le compresseur réduit la dynamique d'un signal dès qu'il dépasse le seuil. Le ratio "
             "détermine de combien le signal est réduit : avec un ratio de 4:1, un dépassement de 4 dB "
             "ressort à 1 dB. L'attaque règle la vitesse de réaction du compresseur, env. 10 ms pour "
             "laisser passer le transitoire d'une caisse claire. Le relâchement fixe le temps de retour "
             "au gain normal."},
    {"title": "Mastering : quel niveau pour le streaming ?",
     "url": "https://arsonor.com/mastering-streaming",
     "text": "Les plateformes de streaming normalisent le volume des morceaux. Spotify et YouTube "
             "visent environ -14 LUFS intégrés. Un master plus fort sera simplement baissé par la "
             "plateforme ! Gardez un true peak sous -1 dBTP pour éviter la distorsion à l'encodage."},
    {"title": "Le de-esser, mode d'emploi",
     "url": "https://arsonor.com/de-esser",
     "text": "Les sifflantes se situent en général entre 5 et 8 kHz. Sur une voix grave, elles peuvent "
             "descendre jusqu'à 3.5 kHz. Le de-esser est un compresseur qui n'agit que sur cette bande "
             "de fréquences. Réglez-le à l'oreille en écoutant les « s » et les « ch »."},
]


def sentences_with(answer: str) -> list[tuple[str, int]]:
    """(sentence, cited number) pairs of an extractive answer."""
    return [(s.strip(), int(n)) for s, n in re.findall(r"(.*?)\[(\d+)\]\.?", answer)]


def test_detect_language():
    assert detect_language("Comment régler l'attaque d'un compresseur ?") == "fr"
    assert detect_language("Quel niveau viser pour le streaming ?") == "fr"
    assert detect_language("What loudness should I aim for on Spotify?") == "en"
    assert detect_language("How do I use a de-esser on vocals?") == "en"


def test_french_question_picks_the_loudness_sentence():
    answer, used = extractive_answer("Quel niveau en LUFS viser pour le streaming ?", PASSAGES)
    pairs = sentences_with(answer)
    assert used == [2] and all(n == 2 for _, n in pairs)
    assert any("-14 LUFS intégrés" in s for s, _ in pairs)
    assert "[2]" in answer and "sifflantes" not in answer


def test_french_question_on_the_attack():
    answer, used = extractive_answer("Comment régler l'attaque du compresseur ?", PASSAGES, max_sentences=2)
    assert used[0] == 1
    assert "L'attaque règle la vitesse de réaction du compresseur, env. 10 ms" in answer
    assert "caisse claire [1]." in answer  # the citation sits before the final period


def test_english_question_picks_the_de_esser_sentences():
    answer, used = extractive_answer("At what frequency does a de-esser work?", PASSAGES)
    assert 3 in used
    assert any("de-esser" in s and n == 3 for s, n in sentences_with(answer))


def test_sentences_keep_passage_order_and_overlaps_are_cited_once():
    passages = [PASSAGES[2], {"title": "Suite", "text": PASSAGES[2]["text"].split(". ", 1)[1]}]
    answer, used = extractive_answer("Sifflantes et fréquences du de-esser ?", passages, max_sentences=4)
    assert used == [1]  # the second chunk only repeats the first one's sentences
    sentences = [s for s, _ in sentences_with(answer)]
    assert sentences == sorted(sentences, key=lambda s: PASSAGES[2]["text"].index(s.rstrip(". ")[:20]))


def test_no_match_answers_honestly_in_the_question_language():
    assert extractive_answer("Quelle carte son acheter pour débuter ?", PASSAGES) == (NO_MATCH["fr"], [])
    assert extractive_answer("Which laptop is best for gaming?", PASSAGES) == (NO_MATCH["en"], [])
    assert extractive_answer("Quel niveau viser ?", []) == (NO_MATCH["fr"], [])


def test_semantic_scoring_with_an_embed_callable():
    concepts = [("attack", "attaque"), ("sibilant", "sifflantes"), ("loud", "lufs")]

    def embed(texts):  # a toy bilingual embedder: one dimension per concept
        rows = [[1.0 if any(w in t.lower() for w in concept) else 0.0 for concept in concepts] + [0.1]
                for t in texts]
        return np.array(rows)

    # No shared word with the French passages ("How fast…attack"): only the embedder can find it.
    answer, used = extractive_answer("How fast should the attack be?", PASSAGES, embed=embed, max_sentences=1)
    assert used == [1] and "L'attaque règle la vitesse" in answer

    def broken(texts):
        raise RuntimeError("model not loaded")

    answer, used = extractive_answer("Quel niveau en LUFS viser ?", PASSAGES, embed=broken)
    assert used == [2]  # falls back to lexical scoring
