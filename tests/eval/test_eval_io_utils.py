"""Shared jsonl / answer helpers: clear errors on malformed input."""

import pytest

from llava.eval.io_utils import index_by_qid, load_answers, read_jsonl, write_json, read_json


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_malformed_json_names_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": [1, }')
    with pytest.raises(ValueError, match=r"bad\.json:1:"):
        read_json(path)


def test_index_by_qid_matches_int_and_str_and_rejects_duplicates():
    idx = index_by_qid([{"question_id": 3}, {"question_id": "4"}])
    assert set(idx) == {"3", "4"}
    with pytest.raises(ValueError, match="question_id '3' appears twice"):
        index_by_qid([{"question_id": 3}, {"question_id": "3"}])


def test_load_answers_requires_text(tmp_path):
    path = tmp_path / "ans.jsonl"
    path.write_text('{"question_id": 1}\n')
    with pytest.raises(ValueError, match="answer 1 lacks text"):
        load_answers(path)


def test_write_json_roundtrip(tmp_path):
    write_json(tmp_path / "sub" / "x.json", {"é": [1]})
    assert read_json(tmp_path / "sub" / "x.json") == {"é": [1]}
