"""The embedded engine: the shared engine suite, plus what only a file-backed engine has."""

from __future__ import annotations

import sqlite3

import pytest

from assistant.engines.embedded import EmbeddedEngine, _lucene_length_table, _lucene_norm
from assistant.errors import EngineError, EngineUnavailable
from tests.engine_contract import CHUNKS, DIM, MODEL, EngineContract, _indexed


class TestEmbeddedContract(EngineContract):
    @pytest.fixture
    def engine(self, tmp_path):
        eng = EmbeddedEngine(tmp_path / "index.sqlite")
        yield eng
        eng.close()


def test_survives_a_restart(tmp_path):
    path = tmp_path / "index.sqlite"
    first = EmbeddedEngine(path)
    first.write(_indexed(), [], dim=DIM, model=MODEL)
    first.close()
    again = EmbeddedEngine(path)
    assert again.count() == len(CHUNKS)
    assert again.lexical_search("bass traps", 1)[0].chunk_id == "acou"


def test_sees_updates_committed_by_another_process(tmp_path):
    path = tmp_path / "index.sqlite"
    reader, writer = EmbeddedEngine(path), EmbeddedEngine(path)
    writer.write(_indexed(CHUNKS[:2]), [], dim=DIM, model=MODEL)
    assert reader.lexical_search("réverbération", 3) == []
    writer.write(_indexed(CHUNKS[4:5]), [], dim=DIM, model=MODEL)
    assert reader.lexical_search("réverbération", 3)[0].chunk_id == "reverb"


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "index.sqlite"
    engine = EmbeddedEngine(path)
    engine.write(_indexed(), [], dim=DIM, model=MODEL)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER fail BEFORE INSERT ON chunks WHEN NEW.chunk_id = 'comp' "
                 "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    conn.commit()
    conn.close()
    with pytest.raises(EngineError, match="disk trouble"):
        engine.write(_indexed(CHUNKS[:2]), ["acou"], dim=DIM, model=MODEL)
    fresh = EmbeddedEngine(path)
    assert fresh.count() == len(CHUNKS) and "acou" in fresh.chunk_hashes()


def test_unreadable_file_is_engine_unavailable(tmp_path):
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EngineUnavailable, match="index.sqlite"):
        EmbeddedEngine(path).ping()


@pytest.mark.parametrize("length", [0, 1, 23, 24, 25, 40, 100, 287, 300, 1000, 123456])
def test_lengths_decode_like_lucene_norms(length):
    decoded = _lucene_length_table()[_lucene_norm(length)]
    assert decoded <= length
    # Lucene keeps 3 significant bits above 24: the decoded length is within 1/8 below.
    assert length - decoded <= max(length - 24, 0) / 8 + 1e-9
    if length < 24:
        assert decoded == length
