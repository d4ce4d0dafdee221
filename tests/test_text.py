"""The shared text tools: sentence splitting, folding, words and content terms."""

from __future__ import annotations

import pytest

from assistant.text import content_terms, fold, split_sentences, stem, tokens


def test_split_keeps_decimals_abbreviations_and_paragraphs():
    text = ("Le VCO oscille à 440 Hz. Réglez la coupure vers 3.5 kHz, env. 10 ms d'attaque ! "
            "Pourquoi ? Parce que.\n\nUn nouveau paragraphe sans point final")
    assert split_sentences(text) == [
        "Le VCO oscille à 440 Hz.",
        "Réglez la coupure vers 3.5 kHz, env. 10 ms d'attaque !",
        "Pourquoi ?",
        "Parce que.",
        "Un nouveau paragraphe sans point final",
    ]


def test_split_keeps_numbers_abbreviations_and_initials():
    text = ("Les sifflantes descendent jusqu'à 3.5 kHz sur une voix grave. Réglez une attaque rapide, "
            "env. 10 ms, ex. sur une caisse claire. Pour le streaming, visez -14 LUFS. Pourquoi ? Parce "
            "que Spotify baisse les morceaux trop forts ! Voir J. S. Bach.\nNouvelle ligne.")
    assert split_sentences(text) == [
        "Les sifflantes descendent jusqu'à 3.5 kHz sur une voix grave.",
        "Réglez une attaque rapide, env. 10 ms, ex. sur une caisse claire.",
        "Pour le streaming, visez -14 LUFS.",
        "Pourquoi ?",
        "Parce que Spotify baisse les morceaux trop forts !",
        "Voir J. S. Bach.",
        "Nouvelle ligne.",
    ]


@pytest.mark.parametrize("text", [
    "Voir cf. Le chapitre suivant.", "Un remix feat. Une chanteuse connue.",
    "Le filtre (réf. Manuel du synthé) coupe.", "Mesuré vers 300 av. J.-C. Sur une lyre.",
    "Une pente de 3,5 dB. par octave.", "La version 2.0 Pro sort.",
])
def test_a_period_after_an_abbreviation_or_in_a_number_does_not_end_a_sentence(text):
    assert split_sentences(text) == [text]


@pytest.mark.parametrize("text, sentences", [
    pytest.param("On règle le facteur Q. Plus il est haut, plus la bande est étroite.",
                 ["On règle le facteur Q.", "Plus il est haut, plus la bande est étroite."],
                 id="a lone capital is not an initial (Q, the quality factor)"),
    pytest.param("Il s'écrie « Trop fort ! » Puis il baisse le gain. Vraiment ? (Oui.) Tant mieux !",
                 ["Il s'écrie « Trop fort ! »", "Puis il baisse le gain.", "Vraiment ?", "(Oui.)",
                  "Tant mieux !"],
                 id="French spacing; closing quotes and brackets stay with their sentence"),
    pytest.param("Un bon accident ! les surprises aident. Le gain (trop fort !) sature, non ? ou pas ?",
                 ["Un bon accident ! les surprises aident.", "Le gain (trop fort !) sature, non ? ou pas ?"],
                 id="! and ? before a lower-case word do not end a sentence"),
    pytest.param("Trois étapes. 1. Couper les basses. 2. Compresser. - puis limiter. → Exporter le master.",
                 ["Trois étapes.", "1. Couper les basses.", "2. Compresser.", "- puis limiter.",
                  "→ Exporter le master."],
                 id="list numbers and markers start sentences"),
    pytest.param("Un titre sans point\n\n  Le   texte,\nsur deux lignes.\r\n\r\nFin",
                 ["Un titre sans point", "Le texte, sur deux lignes.", "Fin"],
                 id="paragraph breaks end sentences, other whitespace is collapsed"),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_pieces_without_letters_join_a_neighbour():
    assert split_sentences("Voici. 2. Et la suite. 42 !") == ["Voici.", "2. Et la suite. 42 !"]
    assert split_sentences("") == [] and split_sentences("  \n\n ") == []


def test_fold_expands_ligatures_and_removes_accents():
    assert fold("Égaliseur Œuvre cœur ÆGIS Straße") == "egaliseur oeuvre coeur aegis strasse"
    assert fold("l’été à Noël") == "l'ete a noel"


def test_tokens_are_folded_words_and_numbers():
    assert tokens("L’attaque à 3,5 ms, puis 3.5 kHz !") == ["l", "attaque", "a", "3.5", "ms", "puis", "3.5",
                                                           "khz"]


def test_content_terms_drop_stop_words_and_stem():
    assert content_terms("Les compresseurs") == content_terms("la compression") == ["compress"]
    assert content_terms("Égaliseur") == content_terms("egaliseurs")
    assert content_terms("Comment est-ce que je fais ?") == []
    assert stem("bass") == "bass" and stem("mix") == "mix" and stem("440") == "440"
