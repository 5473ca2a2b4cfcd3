"""Readers on small fixtures written here: ReDial, INSPIRED, Reddit-Movie, MovieLens, synthetic, splits."""

from __future__ import annotations

import json

import polars as pl
import pytest

from corpus_build.interactions import inspired, reddit, redial, splits, unicrs
from corpus_build.interactions import movielens_ratings as ml
from corpus_build.interactions.synthetic_conversations import synthesise
from corpus_build.interactions.turns import JsonlFormatError, turns_frame
from corpus_build.linking import Linker, LinkLog
from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, USER_SEQUENCES_SCHEMA

FILMS = [("tt0250687", "Super Troopers", 2001), ("tt0087928", "Police Academy", 1984),
         ("tt0089822", "Police Academy 2: Their First Assignment", 1985), ("tt0093409", "Lethal Weapon", 1987),
         ("tt0086960", "Beverly Hills Cop", 1984), ("tt0133093", "The Matrix", 1999),
         ("tt0211915", "Amélie", 2001), ("tt0114709", "Toy Story", 1995), ("tt0113497", "Jumanji", 1995),
         ("tt0113228", "Grumpier Old Men", 1995), ("tt0114885", "Waiting to Exhale", 1995),
         ("tt0113041", "Father of the Bride Part II", 1995), ("tt0113277", "Heat", 1995)]


@pytest.fixture(scope="module")
def linker() -> Linker:
    return Linker(pl.DataFrame(FILMS, schema={"movie_id": pl.String, "title": pl.String, "year": pl.Int32},
                               orient="row"))


def _frame(rows):
    return turns_frame(rows)


# --- ReDial ----------------------------------------------------------------------------------------

def _redial_dialog(**overrides) -> dict:
    dialog = {
        "conversationId": "20001", "initiatorWorkerId": 1, "respondentWorkerId": 2,
        "movieMentions": {"111776": "Super Troopers (2001)", "151656": "Police Academy  (1984)",
                          "94688": "Police Academy 2: Their First Assignment (1985)", "101794": "Lethal Weapon (1987)",
                          "555": "A Film Nobody Knows (1950)"},
        "respondentQuestions": {"111776": {"suggested": 0, "seen": 1, "liked": 1},
                                "151656": {"suggested": 1, "seen": 0, "liked": 1},
                                "94688": {"suggested": 1, "seen": 0, "liked": 1},
                                "555": {"suggested": 1, "seen": 0, "liked": 1}},
        "initiatorQuestions": {"101794": {"suggested": 1, "seen": 0, "liked": 2},
                               "111776": {"suggested": 0, "seen": 1, "liked": 1}},
        "messages": [
            {"text": "Hi I am looking for a movie like @111776", "senderWorkerId": 1, "messageId": 1},
            {"text": "You should watch @151656", "senderWorkerId": 2, "messageId": 2},
            {"text": "I have seen @111776", "senderWorkerId": 1, "messageId": 3},
            {"text": "Ok then", "senderWorkerId": 1, "messageId": 4},
            {"text": "Yes @151656 is very funny and so is @94688 , like @111776", "senderWorkerId": 2, "messageId": 5},
            {"text": "and @555 and @999", "senderWorkerId": 2, "messageId": 6},
            {"text": "any other?", "senderWorkerId": 1, "messageId": 7},
            {"text": "yes @101794", "senderWorkerId": 2, "messageId": 8},
        ],
    }
    return dialog | overrides


def _write_jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_redial_turns_targets_history_and_context(tmp_path, linker):
    path = _write_jsonl(tmp_path / "test_data.jsonl", [_redial_dialog()])
    log = LinkLog()
    rows, quarantine = redial.read_redial(path, "test", linker, log, rule="suggested")
    assert quarantine == []
    frame = _frame(rows)
    assert frame["turn_index"].to_list() == [1, 3, 5]  # seeker messages 3+4 merged into one turn
    first, second, third = frame.to_dicts()
    assert first["context"] == [{"role": "seeker", "text": "Hi I am looking for a movie like Super Troopers (2001)"}]
    assert first["target_movie_ids"] == ["tt0087928"] and first["history_movie_ids"] == ["tt0250687"]
    # Super Troopers is mentioned by the recommender but not suggested; unknown film and @999 not linked
    assert second["target_movie_ids"] == ["tt0087928", "tt0089822"]
    assert second["target_mentioned_before"] == [True, False]
    assert second["context"][-1] == {"role": "seeker", "text": "I have seen Super Troopers (2001) Ok then"}
    # Lethal Weapon: the recommender did not answer, the seeker's questionnaire says suggested
    assert third["target_movie_ids"] == ["tt0093409"] and "tt0089822" in third["history_movie_ids"]
    assert log.mentions["redial"] == 5 and log.linked["redial"] == 4
    assert log.unresolved()["mention"].to_list() == ["A Film Nobody Knows (1950)"]


def test_redial_rules(tmp_path, linker):
    path = _write_jsonl(tmp_path / "d.jsonl", [_redial_dialog()])
    assert redial.DEFAULT_RULE == "mentioned"  # the zero-shot CRS protocol's reading
    rows, _ = redial.read_redial(path, "test", linker, LinkLog())
    assert _frame(rows)["target_movie_ids"].to_list()[1] == ["tt0087928", "tt0089822", "tt0250687"]
    with pytest.raises(ValueError, match="rule"):
        redial.read_redial(path, "test", linker, LinkLog(), rule="liked")


def test_redial_bad_lines_are_quarantined_and_good_ones_kept(tmp_path, linker):
    records = [
        "{not json",
        json.dumps({"conversationId": "x"}),
        _redial_dialog(conversationId="20002", messages=[]),  # empty dialogue: no rows, not an error
        _redial_dialog(conversationId="20003", movieMentions=[], respondentQuestions=[], initiatorQuestions=[]),
        _redial_dialog(conversationId="20004", messages=[{"text": "hi @151656", "senderWorkerId": 77}]),
        "",
        _redial_dialog(conversationId="20005"),
        "[1, 2]",
    ]
    path = _write_jsonl(tmp_path / "d.jsonl", records)
    rows, quarantine = redial.read_redial(path, "validation", linker, LinkLog())
    assert {r["dialog_id"] for r in rows} == {"20005"}
    assert [(q["line"], q["reason"].split(":")[0]) for q in quarantine] == [
        (1, "JSONDecodeError"), (2, "ValueError"), (5, "ValueError"), (8, "ValueError")]
    assert all(q["file"] == str(path) for q in quarantine)
    assert "unknown worker 77" in quarantine[2]["reason"]


def _cfcrs(dialog: dict) -> dict:
    """The same dialogue in the CFCRS/UniCRS preprocessed ReDial shape: one entry per merged turn."""
    turns = []
    for message in dialog["messages"]:
        if turns and turns[-1]["senderWorkerId"] == message["senderWorkerId"]:
            turns[-1]["text"] += " " + message["text"]
            continue
        turns.append({"senderWorkerId": message["senderWorkerId"], "text": message["text"], "turn_id": len(turns),
                      "entity": [], "item": [], "thread": [], "masked_text": "", "word": []})
    return dialog | {"messages": turns}


def test_redial_cfcrs_shape_gives_the_same_turns(tmp_path, linker):
    raw = _redial_dialog()
    raw["messages"][1]["text"] = "You should watch &quot;@151656&quot;"  # published files keep HTML entities
    raw_rows, _ = redial.read_redial(_write_jsonl(tmp_path / "raw.jsonl", [raw]), "train", linker, LinkLog())
    merged = _cfcrs(raw)
    merged["messages"][1]["text"] = 'You should watch "@151656"'  # the CFCRS copy decoded them
    cfcrs_rows, quarantine = redial.read_redial(_write_jsonl(tmp_path / "cfcrs.jsonl", [merged]), "train", linker,
                                                LinkLog())
    assert quarantine == [] and len(cfcrs_rows) == 3
    assert cfcrs_rows == raw_rows  # same turns, same context text, same fingerprint
    assert raw_rows[1]["context"][1]["text"] == 'You should watch "Police Academy (1984)"'


def test_a_jsonl_file_of_another_format_is_a_clear_error(tmp_path, linker):
    unicrs_file = _write_jsonl(tmp_path / "train_data_dbpedia.jsonl", [[{"role": "SEEKER", "text": "hi", "movie": []}]])
    with pytest.raises(JsonlFormatError, match="train_data_dbpedia.jsonl.*UniCRS format"):
        redial.read_redial(unicrs_file, "train", linker, LinkLog())
    redial_file = _write_jsonl(tmp_path / "train_data.jsonl", [_redial_dialog()])
    with pytest.raises(JsonlFormatError, match="train_data.jsonl.*ReDial format"):
        unicrs.read_unicrs(redial_file, "train", linker, LinkLog())


# --- UniCRS (INSPIRED train) -----------------------------------------------------------------------

def _unicrs_turn(role: str, text: str, movies=()) -> dict:
    return {"text": text, "role": role, "movie": list(movies), "entity_link": [], "entity_name": [],
            "movie_link": [f"<http://dbpedia.org/resource/{m}>" for m in movies], "movie_name": list(movies)}


UNICRS_DIALOG = [
    _unicrs_turn("RECOMMENDER", "Hi There! What types of movies do you like to watch?"),
    _unicrs_turn("SEEKER", "I liked The Matrix.", ["The Matrix (1999)"]),
    _unicrs_turn("RECOMMENDER", "Then try Heat, or Toy Story with the kids.", ["Heat (1995)", "Toy Story (1995)"]),
    _unicrs_turn("SEEKER", "Seen Heat. Anything else?"),
    _unicrs_turn("RECOMMENDER", "Jumanji! And a film nobody knows.", ["Jumanji (1995)", "Zzz Unknown (1950)"]),
]


def test_unicrs_turns_targets_and_stable_ids(tmp_path, linker):
    other = [_unicrs_turn("SEEKER", "Something like Heat?", ["Heat (1995)"]),
             _unicrs_turn("RECOMMENDER", "The Matrix", ["The Matrix (1999)"])]
    path = _write_jsonl(tmp_path / "train_unicrs.jsonl", [UNICRS_DIALOG, other])
    log = LinkLog()
    rows, quarantine = unicrs.read_unicrs(path, "train", linker, log, dataset="inspired_train")
    assert quarantine == []
    frame = _frame(rows)
    assert frame["turn_index"].to_list() == [2, 4, 1]
    first, second, third = frame.to_dicts()
    assert first["target_movie_ids"] == ["tt0113277", "tt0114709"] and first["history_movie_ids"] == ["tt0133093"]
    assert first["context"][1] == {"role": "seeker", "text": "I liked The Matrix."}
    assert second["target_movie_ids"] == ["tt0113497"]
    assert second["history_movie_ids"] == ["tt0133093", "tt0113277", "tt0114709"]
    assert first["dialog_id"] == second["dialog_id"] != third["dialog_id"]
    assert first["dialog_id"].startswith(unicrs.ID_PREFIX)
    assert log.link_rate("inspired_train") == 6 / 7
    reordered = _write_jsonl(tmp_path / "copy.jsonl", [other, UNICRS_DIALOG])  # another copy, another order
    again, _ = unicrs.read_unicrs(reordered, "train", linker, LinkLog())
    assert {r["dialog_id"] for r in again} == {r["dialog_id"] for r in rows}


def test_unicrs_bad_lines_are_quarantined(tmp_path, linker):
    records = [UNICRS_DIALOG, "[]", json.dumps([{"role": "BOT", "text": "hi", "movie": []}]),
               json.dumps([{"role": "SEEKER", "text": "x", "movie": "Heat (1995)"}]), "{broken", "[1]"]
    path = _write_jsonl(tmp_path / "train.jsonl", records)
    rows, quarantine = unicrs.read_unicrs(path, "train", linker, LinkLog())
    assert len(rows) == 2
    assert [q["line"] for q in quarantine] == [2, 3, 4, 5, 6]
    assert "role 'BOT'" in quarantine[1]["reason"] and "not a list" in quarantine[2]["reason"]


def test_deduplicate_keeps_each_dialogue_once_in_priority_order(tmp_path, linker):
    path = _write_jsonl(tmp_path / "d.jsonl", [_redial_dialog(conversationId=c) for c in ("1", "2")])
    same_text = redial.read_redial(path, "validation", linker, LinkLog())[0]  # two ids, one text
    other = _redial_dialog(conversationId="3", messages=_redial_dialog()["messages"][:2])
    test_rows = redial.read_redial(_write_jsonl(tmp_path / "t.jsonl", [other]), "test", linker, LinkLog())[0]
    train_path = _write_jsonl(tmp_path / "tr.jsonl", [_redial_dialog(conversationId=c, messages=other["messages"])
                                                      for c in ("3", "4")] + [_cfcrs(_redial_dialog(conversationId="5"))])
    train_rows = redial.read_redial(train_path, "train", linker, LinkLog())[0]
    kept, removed = splits.deduplicate([("test", test_rows), ("validation", same_text), ("train", train_rows)])
    assert removed == {"test": 0, "validation": 1, "train": 3}  # "2": text of "1"; "3": id; "4", "5": text
    assert sorted({(r["split"], r["dialog_id"]) for r in kept}) == [("test", "3"), ("validation", "1")]
    repeated = same_text[:3] + same_text[:3]  # one dialogue written twice in a file
    kept, removed = splits.deduplicate([("file", repeated)])
    assert removed == {"file": 1} and kept == same_text[:3]


# --- INSPIRED --------------------------------------------------------------------------------------

HEADER = ["dialog_id", "utt_id", "speaker", "turn_id", "text", "text_with_placeholder", "movies", "genres",
          "people_names", "movie_dict", "genre_dict", "actor_dict", "director_dict", "others_dict",
          "expert_label", "second_label", "fine_label", "coarse_label", "movie_id"]


def _tsv_row(dialog, utt, speaker, text, movies=""):
    fields = {"dialog_id": dialog, "utt_id": str(utt), "speaker": speaker, "turn_id": "1", "text": text,
              "movies": movies}
    return "\t".join(fields.get(h, "") for h in HEADER)


def test_inspired_turns(tmp_path, linker):
    lines = ["\t".join(HEADER),
             _tsv_row("d1", 1, "RECOMMENDER", "Hello! What do you like?"),
             _tsv_row("d1", 2, "SEEKER", "I liked QUOTATION_MARKThe MatrixQUOTATION_MARK", "The Matrix (1999)"),
             _tsv_row("d1", 3, "SEEKER", "and Amélie", "Amelie (2001)"),
             _tsv_row("d1", 4, "RECOMMENDER", "Try Heat", "Heat (1995)"),
             _tsv_row("d1", 5, "RECOMMENDER", "or Toy Story and Zzz", "Toy Story (1995);  Zzz Unknown (1950)"),
             _tsv_row("d1", 6, "ALIEN", "???"),
             _tsv_row("d2", 1, "SEEKER", "Anything?"),
             _tsv_row("d2", 2, "RECOMMENDER", "No idea."),
             "d3\t1\tSEEKER\t1\ttoo\tmany\tfields" + "\tx" * 20]
    path = tmp_path / "dev.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = LinkLog()
    rows, quarantine = inspired.read_inspired(path, "validation", linker, log)
    frame = _frame(rows)
    assert frame.height == 1  # d2 recommends nothing
    row = frame.row(0, named=True)
    assert row["turn_index"] == 2 and row["target_movie_ids"] == ["tt0113277", "tt0114709"]
    assert row["context"][1] == {"role": "seeker", "text": 'I liked "The Matrix" and Amélie'}
    assert row["history_movie_ids"] == ["tt0133093", "tt0211915"]
    assert [q["line"] for q in quarantine] == [7, 10]
    assert log.link_rate("inspired") == 4 / 5


def test_inspired_wrong_header_is_a_clear_error(tmp_path, linker):
    path = tmp_path / "dev.tsv"
    path.write_text("a\tb\n1\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dev.tsv.*speaker"):
        inspired.read_inspired(path, "validation", linker, LinkLog())


# --- Reddit-Movie ----------------------------------------------------------------------------------

def test_reddit_rows(tmp_path, linker):
    entity2id = tmp_path / "entity2id.json"
    entity2id.write_text(json.dumps({"The Matrix (1999)": "tt0133093", "Heat (1995)": 7}), encoding="utf-8")
    records = [
        {"context": ["", "any film like The Matrix?"], "resp": "Heat!", "rec": [7], "prev_entity": ["tt0133093"],
         "dialog_id": "r1", "turn_id": 1, "is_user": 0},
        {"context": ["", "q", "Heat!"], "resp": "thanks", "rec": [], "dialog_id": "r1", "turn_id": 2, "is_user": 1},
        {"context": ["hi", "x", "more?"], "resp": "Matrix, again", "rec": ["tt0133093", "tt9999999"],
         "dialog_id": "r2", "turn_id": 3, "is_user": 0},
        "not json",
        {"resp": "no context"},
    ]
    path = _write_jsonl(tmp_path / "test.jsonl", records)
    log = LinkLog()
    rows, quarantine = reddit.read_reddit(path, "test", linker, log, reddit.load_entity_names(entity2id))
    frame = _frame(rows)
    assert frame["dialog_id"].to_list() == ["r1", "r2"]
    assert frame["target_movie_ids"].to_list() == [["tt0113277"], ["tt0133093"]]
    assert frame["history_movie_ids"].to_list()[0] == ["tt0133093"]
    assert frame["context"].to_list()[1] == [{"role": "seeker", "text": "hi"}, {"role": "recommender", "text": "x"},
                                            {"role": "seeker", "text": "more?"}]
    assert [q["line"] for q in quarantine] == [4, 5]
    assert log.unresolved()["imdb_id"].to_list() == ["tt9999999"]


def _reddit_csv(path, rows):
    import csv

    columns = ["conv_id", "turn_id", "user_id", "turn_order", "is_seeker", "utc_time", "upvotes", "processed",
               "raw", "context_processed", "context_raw", "context_turn_ids"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def test_reddit_movie_release_csv(tmp_path, linker):
    id2name = {"tt0113277": "Heat (1995)", "tt7777777": "The Matrix (1999)", "tt0000001": "Nothing Known (1900)"}
    rows = [
        {"conv_id": "t3_a_0/2", "turn_id": "t3_a", "turn_order": 0, "is_seeker": "True",
         "processed": "Movies like tt0133093?", "raw": "Movies like The Matrix?", "context_processed": "[]",
         "context_raw": "[]"},
        {"conv_id": "t3_a_0/2", "turn_id": "t1_b", "turn_order": 1, "is_seeker": "False",
         "processed": "tt0113277 and tt7777777, also tt0000001", "raw": "Heat and The Matrix, also Nothing",
         "context_processed": "['Movies like tt0133093?']", "context_raw": "['Movies like The Matrix?']"},
        {"conv_id": "t3_c_1/1", "turn_id": "t1_d", "turn_order": 2, "is_seeker": "false",
         "processed": "['SYSTEM', 'Try tt0114709']", "raw": "['SYSTEM', 'Try Toy Story']",
         "context_processed": "[['USER', 'kids film?'], ['SYSTEM', 'tt0113497?'], ['USER', 'seen it']]",
         "context_raw": "[['USER', 'kids film?'], ['SYSTEM', 'Jumanji?'], ['USER', 'seen it']]"},
        {"conv_id": "t3_e_0/1", "turn_id": "t1_f", "turn_order": 1, "is_seeker": "False",
         "processed": "no film here", "raw": "no film here", "context_processed": "[]", "context_raw": "[]"},
        {"conv_id": "t3_g_0/1", "turn_id": "t1_h", "turn_order": 1, "is_seeker": "maybe",
         "processed": "tt0114709", "raw": "x", "context_processed": "[]", "context_raw": "[]"},
    ]
    path = _reddit_csv(tmp_path / "valid.csv", rows)
    log = LinkLog()
    got, quarantine = reddit.read_reddit_movie_csv(path, linker, log, id2name)
    frame = _frame(got)
    assert frame["split"].unique().to_list() == ["validation"]
    assert frame["dialog_id"].to_list() == ["t3_a_0/2", "t3_c_1/1"]
    first, second = frame.to_dicts()
    # tt7777777 is not a corpus id: linked through its id2name title; tt0000001 unresolved
    assert first["target_movie_ids"] == ["tt0113277", "tt0133093"] and first["target_mentioned_before"] == [False, True]
    assert first["history_movie_ids"] == ["tt0133093"] and first["turn_index"] == 1
    assert first["context"] == [{"role": "seeker", "text": "Movies like The Matrix?"}]
    assert second["target_movie_ids"] == ["tt0114709"] and second["history_movie_ids"] == ["tt0113497"]
    assert [c["role"] for c in second["context"]] == ["seeker", "recommender", "seeker"]
    assert [q["line"] for q in quarantine] == [6]
    assert log.unresolved()["imdb_id"].to_list() == ["tt0000001"]
    with pytest.raises(ValueError, match="split"):
        reddit.read_reddit_movie_csv(_reddit_csv(tmp_path / "other.csv", rows), linker, LinkLog())


# --- MovieLens -------------------------------------------------------------------------------------

def _ml_latest(tmp_path, ratings: list[tuple]):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(
        f"{u},{m},4.0,{t}" for u, m, t in ratings) + "\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Animation\n2,Jumanji (1995),Adventure\n'
        '3,Grumpier Old Men (1995),Comedy\n4,Waiting to Exhale (1995),Drama\n'
        '5,"Father of the Bride Part II (1995)",Comedy\n6,Heat (1995),Action\n7,"Matrix, The (1999)",Sci-Fi\n'
        '8,Unknown Film Nobody Has (1950),Drama\n')
    (tmp_path / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2,0113497,8844\n7,0133093,603\n")
    return tmp_path / "ratings.csv", tmp_path / "movies.csv", tmp_path / "links.csv"


def test_movielens_leave_one_out(tmp_path, linker):
    ratings = [(u, m, 100 * m + u) for u in (1, 2, 3, 4, 5) for m in (1, 2, 3, 4, 5, 6)]
    ratings += [(1, 7, 50), (1, 8, 60), (6, 1, 1), (6, 2, 2)]  # film 7: 1 rating; film 8 unlinked; user 6: 2
    ratings += [(2, 6, 1000)]  # duplicate rating of a film: first kept
    r, f = ml.read_ml_latest_small(*_ml_latest(tmp_path, ratings))
    log = LinkLog()
    mapping = ml.link_films(f, linker, log, "ml-latest-small")
    assert log.link_rate("ml-latest-small") == 7 / 8 and mapping["7"] == "tt0133093"
    seqs = ml.leave_one_out(r, mapping, "ml-latest-small")
    assert seqs.schema == pl.Schema(USER_SEQUENCES_SCHEMA)
    assert seqs["user_id"].to_list() == ["1", "2", "3", "4", "5"]
    user1 = seqs.row(0, named=True)
    assert user1["movie_ids"] == ["tt0114709", "tt0113497", "tt0113228", "tt0114885", "tt0113041", "tt0113277"]
    assert user1["train_movie_ids"] == user1["movie_ids"][:-2]
    assert (user1["val_movie_id"], user1["test_movie_id"]) == ("tt0113041", "tt0113277")


def test_movielens_timestamp_ties_keep_file_order(tmp_path, linker):
    ratings = [(u, m, 7) for u in (1, 2, 3, 4, 5) for m in (6, 5, 4, 3, 2, 1)]
    r, f = ml.read_ml_latest_small(*_ml_latest(tmp_path, ratings))
    seqs = ml.leave_one_out(r, ml.link_films(f, linker, LinkLog(), "x"), "x")
    assert seqs["test_movie_id"].unique().to_list() == ["tt0114709"]


def test_movielens_bad_csv_names_the_file(tmp_path, linker):
    paths = _ml_latest(tmp_path, [(1, 1, 1)])
    paths[0].write_text("user,film\n1,2\n")
    with pytest.raises(ValueError, match="ratings.csv.*userId"):
        ml.read_ml_latest_small(*paths)
    paths[0].write_text("userId,movieId,rating,timestamp\n1,1,4.0,notatime\n")
    with pytest.raises(ValueError, match="ratings.csv"):
        ml.read_ml_latest_small(*paths)


def test_ratings_head_drops_its_cut_off_last_user_and_reads_a_stripped_movies_csv(tmp_path, linker):
    ratings = [(u, m, 100 * m + u) for u in (1, 2, 3, 4, 5, 6) for m in (1, 2, 3, 4, 5, 6, 7)]
    ratings_csv, _, links_csv = _ml_latest(tmp_path, ratings + [(7, 1, 1), (7, 2, 2), (7, 3, 3), (7, 4, 4), (7, 5, 5)])
    movies_csv = tmp_path / "stripped_movies.csv"  # the ml-25m-metadata copy: quoting stripped, ", The" -> ";The"
    movies_csv.write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n2,Jumanji (1995),Adventure\n"
                          "3,Grumpier Old Men (1995),Comedy\n4,Waiting to Exhale (1995),Drama\n"
                          "5,Father of the Bride Part II (1995),Comedy\n6,Heat (1995),Action\n"
                          "7,Matrix;The (1999),Action|Sci-Fi\n")
    links_csv.write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    r, f = ml.read_ml_latest_small(ratings_csv, movies_csv, links_csv, drop_last_user=True)
    assert sorted(r["user_id"].unique().to_list()) == ["1", "2", "3", "4", "5", "6"]
    assert f.filter(pl.col("item") == "7")["title"].to_list() == ["The Matrix (1999)"]
    log = LinkLog()
    seqs = ml.leave_one_out(r, ml.link_films(f, linker, log, "ml-25m-head"), "ml-25m-head")
    assert log.link_rate("ml-25m-head") == 1.0 and seqs.height == 6
    assert seqs["test_movie_id"].unique().to_list() == ["tt0133093"]
    assert ml.read_ml_latest_small(ratings_csv, movies_csv, links_csv)[0]["user_id"].n_unique() == 7


def test_ml_100k_latin1_titles_link_by_title(tmp_path, linker):
    (tmp_path / "u.data").write_text("".join(f"{u}\t{m}\t3\t{m}\n" for u in range(1, 6) for m in range(1, 6)))
    (tmp_path / "u.item").write_bytes("1|Toy Story (1995)|01-Jan-1995||url|0\n2|Jumanji (1995)|x||u|0\n"
                                      "3|Grumpier Old Men (1995)|x||u|0\n4|Waiting to Exhale (1995)|x||u|0\n"
                                      "5|Am\u00e9lie (2001)|x||u|0\n".encode("latin-1"))
    r, f = ml.read_ml_100k(tmp_path / "u.data", tmp_path / "u.item")
    seqs = ml.leave_one_out(r, ml.link_films(f, linker, LinkLog(), "ml-100k"), "ml-100k")
    assert seqs.height == 5 and seqs["test_movie_id"].unique().to_list() == ["tt0211915"]
    (tmp_path / "u.item").write_text("broken line\n")
    with pytest.raises(ValueError, match="u.item:1"):
        ml.read_ml_100k(tmp_path / "u.data", tmp_path / "u.item")


def test_ml_1m_split_is_kept_exactly(tmp_path, linker):
    pl.DataFrame({"user_index": [1, 2], "ml_user_id": [10, 20], "train_items": [[1, 2, 9], [3]],
                  "val_item": [3, 9], "test_item": [4, 1]}).write_parquet(tmp_path / "sequences.parquet")
    pl.DataFrame({"ml_movie_id": [1, 2, 3, 4, 99], "item_index": [1, 2, 3, 4, 9]}).write_parquet(
        tmp_path / "items.parquet")
    (tmp_path / "movies.dat").write_bytes("1::Toy Story (1995)::A\n2::Jumanji (1995)::B\n3::Heat (1995)::C\n"
                                          "4::Am\u00e9lie (2001)::D\n99::Unknown Nothing (1950)::E\n".encode("latin-1"))
    (tmp_path / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,1\n")
    log = LinkLog()
    seqs, stats = ml.read_ml_1m_leave_one_out(tmp_path / "sequences.parquet", tmp_path / "items.parquet",
                                              tmp_path / "movies.dat", linker, log, tmp_path / "links.csv")
    assert seqs.to_dicts() == [{"dataset": "ml-1m", "user_id": "10",
                                "movie_ids": ["tt0114709", "tt0113497", "tt0113277", "tt0211915"],
                                "train_movie_ids": ["tt0114709", "tt0113497"], "val_movie_id": "tt0113277",
                                "test_movie_id": "tt0211915"}]
    assert stats == {"ml-1m_users_dropped_unlinked_target": 1.0, "ml-1m_train_items_dropped_unlinked": 1.0}
    assert log.methods[("ml-1m", "imdb_id")] == 1 and log.link_rate("ml-1m") == 4 / 5


# --- synthetic conversations and splits ------------------------------------------------------------

def test_synthetic_conversations(linker):
    ids = [f[0] for f in FILMS]
    seqs = pl.DataFrame([{"dataset": "ml", "user_id": str(u), "movie_ids": ids[u:u + 10],
                          "train_movie_ids": ids[u:u + 8], "val_movie_id": ids[u + 8], "test_movie_id": ids[u + 9]}
                         for u in range(3)] + [{"dataset": "ml", "user_id": "short", "movie_ids": ids[:5],
                                                "train_movie_ids": ids[:3], "val_movie_id": ids[3],
                                                "test_movie_id": ids[4]}], schema=USER_SEQUENCES_SCHEMA)
    rows = synthesise(seqs, linker, seed=7)
    frame = _frame(rows)
    assert frame.height == 6 and frame["dialog_id"].n_unique() == 3
    first = frame.row(0, named=True)
    train = ids[0:8][-6:]
    assert first["target_movie_ids"] == [train[2]] and first["history_movie_ids"] == train[:2]
    assert linker.label(train[0]) in first["context"][0]["text"]
    second = frame.row(1, named=True)
    assert second["target_movie_ids"] == [train[5]] and second["history_movie_ids"] == [*train[:4]]
    for user, val, test in seqs.select("user_id", "val_movie_id", "test_movie_id").iter_rows():
        shown = frame.filter(pl.col("dialog_id") == f"ml:{user}")
        films = {m for col in ("target_movie_ids", "history_movie_ids") for ms in shown[col] for m in ms}
        assert not {val, test} & films  # the sequence's held-out films never appear
    assert rows == synthesise(seqs, linker, seed=7)  # deterministic
    assert splits.overlapping_dialogs(frame).is_empty()


def test_splits():
    assert splits.hash_split("a", seed=1) == splits.hash_split("a", seed=1)
    counts = pl.Series([splits.hash_split(str(i)) for i in range(5000)]).value_counts()
    share = dict(counts.iter_rows())
    assert 0.07 < share["test"] / 5000 < 0.13 and 0.07 < share["validation"] / 5000 < 0.13
    turns = pl.DataFrame({"dataset": ["redial"] * 3, "dialog_id": ["1", "1", "2"],
                          "split": ["train", "test", "test"]})
    assert splits.overlapping_dialogs(turns)["dialog_id"].to_list() == ["1"]


def test_turns_frame_schema(tmp_path, linker):
    path = _write_jsonl(tmp_path / "d.jsonl", [_redial_dialog()])
    rows, _ = redial.read_redial(path, "test", linker, LinkLog())
    assert _frame(rows).schema == pl.Schema(CONVERSATION_TURNS_SCHEMA)
