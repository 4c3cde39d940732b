"""Recipe edits mid-run at the data level: resume a BlendedSamples state under another recipe.

Each kind of edit (weights, a stream added, a stream dropped, a filter changed, the shards
re-tagged) is checked by counting what the whole run trained: every token of every document, from
the pieces of every sample drawn before and after the edit (a sample's last token is the next
one's label, not trained). Before the edit every stream is in its first epoch, so the promise reads:
after the edit, each stream of the new recipe first trains, each exactly once, the documents it
selects that no stream trained before the edit (finishing a document the edit cut), and nothing
else; then it goes on with its next epochs.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cpt.config import DataConfig
from cpt.sampling import DocumentTable, Stream, StreamConfig
from cpt.train.data_bits import BITS_FILE, load_data_state, split_bits, write_bits
from cpt.train.recipe_edit import RecipeEditRefused
from cpt.train.stream_data import BlendedSamples

SEQ, N = 32, 240
BEFORE = 90  # samples before the edit: every stream is in its first epoch


def _table(topics=None, lengths=None) -> DocumentTable:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 90, N) if lengths is None else lengths
    topics = [("a", "b", "c")[i % 3] for i in range(N)] if topics is None else topics
    return DocumentTable.from_columns(lengths, {"topic": topics}, source="shard0")


def _streams(table, spec: dict[str, str]) -> list[Stream]:
    return [Stream(table, StreamConfig(name=n, seq_length=SEQ, filter=f, seed=3 + i))
            for i, (n, f) in enumerate(spec.items())]


def _saved(samples: BlendedSamples) -> dict:
    """The data state as a checkpoint stores it (JSON + the bitmaps file), read back."""
    state, arrays = split_bits(samples.state_dict())
    with tempfile.TemporaryDirectory() as d:
        write_bits(Path(d) / BITS_FILE, arrays)
        return load_data_state(json.loads(json.dumps(state)), d)


def _samples(table, spec: dict[str, str], weights: dict[str, float]) -> BlendedSamples:
    return BlendedSamples(_streams(table, spec), weights, SEQ, DataConfig(), num_workers=0, prefetch=False)


def _trained(samples: BlendedSamples, lo: int, hi: int) -> dict[str, list[tuple[int, int, int]]]:
    """{stream: [(table row, start, stop) trained, in order]} of stage positions [lo, hi)."""
    stream_ids, within = samples.sample_ids(np.arange(lo, hi, dtype=np.int64))
    out: dict[str, list] = {n: [] for n in samples.stream_names}
    for pos in range(hi - lo):
        s = samples.streams[int(stream_ids[pos])]
        pieces = s.pieces([within[pos]]).for_sample(0)
        last = pieces[-1]
        pieces[-1] = last._replace(stop=last.stop - 1)  # the label token: trained by the next sample
        out[s.name] += [(int(p.document), p.start, p.stop) for p in pieces if p.stop > p.start]
    return out


def _cover(table, uses) -> list[np.ndarray]:
    cov = [np.zeros(int(n), int) for n in table.lengths]
    for row, a, b in uses:
        cov[row][a:b] += 1
    return cov


def _current_epoch(uses: list[tuple[int, int, int]], documents: int, lengths) -> list[tuple[int, int, int]]:
    """The uses of a stream's epoch in progress: epoch k starts with its (k * documents + 1)-th
    document start (an unedited stream trains its documents once per epoch, back to back)."""
    starts = [k for k, (_, a, _) in enumerate(uses) if a == 0]
    if not starts:
        return []
    row, _, stop = uses[-1]
    if len(starts) % documents == 0 and stop == lengths[row]:
        return []  # the last epoch just ended: the next one has trained nothing yet
    return uses[starts[(len(starts) - 1) // documents * documents]:]


def _edit(before_spec, before_w, after_spec, after_w, after_table=None, after_samples=3000, before=BEFORE):
    """Draw `before` samples, checkpoint (through JSON), resume under the new recipe, draw more;
    returns the uses of each stream's epoch in progress at the edit, and those after it."""
    table = _table()
    first = _samples(table, before_spec, before_w)
    trained = _trained(first, 0, before)
    used_before = [u for s in first.streams for u in _current_epoch(trained[s.name], s.num_documents, table.lengths)]
    state = _saved(first)
    second = _samples(after_table or table, after_spec, after_w)
    diff = second.load_state_dict(state)
    after = _trained(second, before, before + after_samples)
    return table, used_before, second, diff, after


def _assert_no_repeat_no_skip(table, used_before, second, after) -> None:
    """Each stream of the new recipe: first exactly the rest of the epoch (what no stream trained
    before, each token once, a cut document finished), then only its next epochs. `used_before`:
    the uses of every stream's epoch in progress (disjoint filters), or {stream: the uses of its
    own epoch in progress} (overlapping filters)."""
    own = isinstance(used_before, dict)  # {stream: uses}: each stream's own epoch (overlapping filters)
    for s in second.streams:
        before = _cover(table, used_before.get(s.name, []) if own else used_before)
        assert all(c.max() <= 1 for c in before)  # within an epoch: no repeat before the edit either
        selected = set(s.rows.tolist())
        rest = {r for r in selected if before[r].min() == 0}  # not (or not fully) trained before
        uses, cov = after[s.name], [c.copy() for c in before]
        done = 0
        for k, (row, a, b) in enumerate(uses):
            assert row in rest, f"{s.name}: document {row} trained again within the epoch (use {k})"
            cov[row][a:b] += 1
            assert cov[row].max() <= 1, f"{s.name}: tokens of document {row} trained twice within the epoch"
            if cov[row].min() == 1:
                done += 1
            if done == len(rest):
                break
        assert done == len(rest), f"{s.name}: {len(rest) - done} documents of the epoch skipped"
        nxt = {row for row, a, b in uses[k + 1:] if a == 0}  # the next epoch: every selected document
        assert nxt == selected or not uses[k + 1:]


SPEC = {"A": 'topic == "a"', "B": 'topic == "b"'}
W = {"A": 0.6, "B": 0.4}


def test_unedited_resume_is_exact_and_reports_no_change():
    table = _table()
    whole = _samples(table, SPEC, W)
    want = whole.sample_ids(np.arange(0, 400))
    first = _samples(table, SPEC, W)
    first.sample_ids(np.arange(0, BEFORE))
    state = _saved(first)
    again = _samples(table, SPEC, W)
    assert again.load_state_dict(state) is None and again.start == 0 and not again.closed
    got = again.sample_ids(np.arange(BEFORE, 400))
    np.testing.assert_array_equal(got[0], want[0][BEFORE:])
    np.testing.assert_array_equal(got[1], want[1][BEFORE:])


def test_weights_edit_keeps_the_history_and_adds_one_entry():
    table, used, second, diff, after = _edit(SPEC, W, SPEC, {"A": 0.2, "B": 0.8})
    assert diff["at_sample"] == BEFORE and diff["weights"]["A"] == pytest.approx([0.6, 0.2])
    last = second.blender.history[-1]
    assert last.start == BEFORE and last.reason == "recipe_change" and second.start == 0
    _assert_no_repeat_no_skip(table, used, second, after)
    # saved and resumed again with the same recipe: no second change
    again = _samples(table, SPEC, {"A": 0.2, "B": 0.8})
    assert again.load_state_dict(_saved(second)) is None


def test_an_edit_keeps_the_shares_a_controller_reached_for_the_streams_it_does_not_reweight():
    table = _table()
    first = _samples(table, SPEC, W)
    first.set_weights({"A": 0.9, "B": 0.1}, effective_at=50)  # a mixture controller's move
    first.sample_ids(np.arange(BEFORE))
    added = _samples(table, {**SPEC, "C": 'topic == "c"'}, {**W, "C": 0.5})
    added.load_state_dict(_saved(first))
    assert added.weights_at(BEFORE) == pytest.approx({"A": 0.9 / 1.5, "B": 0.1 / 1.5, "C": 0.5 / 1.5})
    reweighted = _samples(table, SPEC, {"A": 0.6, "B": 0.2})
    diff = reweighted.load_state_dict(_saved(first))
    assert list(diff["weights"]) == ["B"]
    assert reweighted.weights_at(BEFORE) == pytest.approx({"A": 0.9 / 1.1, "B": 0.2 / 1.1})


def test_add_a_stream():
    table, used, second, diff, after = _edit(SPEC, W, {**SPEC, "C": 'topic == "c"'}, {"A": 0.4, "B": 0.3, "C": 0.3})
    assert diff["added"] == ["C"] and not diff["dropped"] and not diff["changed"]
    assert second.start == BEFORE and len(second.closed) == 1 and second.closed[0]["stop"] == BEFORE
    _assert_no_repeat_no_skip(table, used, second, after)


def test_drop_a_stream():
    table, used, second, diff, after = _edit(SPEC, W, {"A": SPEC["A"]}, {"A": 1.0})
    assert diff["dropped"] == ["B"] and not diff["added"] and not diff["changed"]
    assert second.streams[0].head is None  # unchanged: carries on where it stopped
    _assert_no_repeat_no_skip(table, used, second, after)


def test_change_a_filter():
    table, used, second, diff, after = _edit(SPEC, W, {"A": 'topic in ["a", "c"]', "B": SPEC["B"]}, W)
    assert diff["changed"] == {"A": {"filter": ['topic == "a"', 'topic in ["a", "c"]']}}
    assert second.streams[0].head is not None and second.streams[1].head is None
    _assert_no_repeat_no_skip(table, used, second, after)


def test_retag_moves_documents_between_streams_without_repeats():
    topics = [("a", "b", "c")[i % 3] for i in range(N)]
    retagged = [("b" if t == "a" and i % 2 else "a" if t == "b" and i % 4 == 1 else t) for i, t in enumerate(topics)]
    table, used, second, diff, after = _edit(SPEC, W, SPEC, W, after_table=_table(retagged))
    assert set(diff["changed"]) == {"A", "B"}
    assert diff["changed"]["A"] == {"metadata": "changed (re-tagged or re-scored shards)"}
    moved_and_trained = {r for r, a, b in used if topics[r] != retagged[r]}
    assert moved_and_trained  # the test moves documents already trained
    _assert_no_repeat_no_skip(table, used, second, after)


def test_edit_in_a_later_epoch_resumes_the_rest_of_that_epoch():
    """Streams deep in their third and fourth epochs: the edited one trains the rest of its epoch."""
    deep = 800
    table, used, second, diff, after = _edit(SPEC, W, {"A": 'topic in ["a", "c"]', "B": SPEC["B"]}, W,
                                             before=deep)
    assert diff["resumes"]["A"]["epoch"] >= 2 and used
    _assert_no_repeat_no_skip(table, used, second, after)


def test_two_edits_the_second_while_a_stream_still_trains_the_rest_of_its_epoch():
    """A filter change, 40 samples, then a re-tag: the second edit's ledgers include the first's, and
    a stream may have to finish two documents the edit cut."""
    table = _table()
    first = _samples(table, SPEC, W)
    used = [u for v in _trained(first, 0, BEFORE).values() for u in v]
    spec2 = {"A": 'topic in ["a", "c"]', "B": SPEC["B"]}
    second = _samples(table, spec2, W)
    second.load_state_dict(_saved(first))
    used += [u for v in _trained(second, BEFORE, BEFORE + 40).values() for u in v]
    assert second.streams[0].head is not None
    retagged = [("b" if t == "a" and i % 2 else t) for i, t in enumerate(table.columns["topic"].tolist())]
    third = _samples(_table(retagged), spec2, W)
    diff = third.load_state_dict(_saved(second))
    assert set(diff["changed"]) == {"A", "B"} and len(third.closed) == 2
    # B finishes two cut documents: its own, and A's, which the re-tag moved into B
    assert len(diff["resumes"]["B"]["cut_documents"]) == 2
    after = _trained(third, BEFORE + 40, BEFORE + 40 + 3000)
    _assert_no_repeat_no_skip(table, used, third, after)


def test_disjoint_streams_share_one_bitmap_overlapping_ones_keep_their_own():
    table = _table()
    disjoint = _samples(table, {**SPEC, "C": 'topic == "c"'}, {"A": 1, "B": 1, "C": 1})
    disjoint.sample_ids(np.arange(BEFORE))
    state, arrays = split_bits(disjoint.state_dict())
    assert len(arrays) == 1 and {d["bits"]["$bits"] for d in state["ledgers"].values()} == {"b0"}
    trained = _trained(_samples(table, {**SPEC, "C": 'topic == "c"'}, {"A": 1, "B": 1, "C": 1}), 0, BEFORE)
    whole = {r for uses in trained.values() for r, _, _ in uses}
    assert set(np.flatnonzero(arrays["b0"]).tolist()) == whole  # the union of what the three trained
    overlap = _samples(table, {"A": 'topic in ["a", "b"]', "B": 'topic in ["b", "c"]'}, W)
    overlap.sample_ids(np.arange(BEFORE))
    state, arrays = split_bits(overlap.state_dict())
    assert len(arrays) == 2 and not any(d["shared"] for d in state["ledgers"].values())
    assert "ledgers" not in overlap.state_dict(ledgers=False)  # what the ranks that do not write compute


def test_overlapping_filters_each_stream_keeps_its_own_epoch():
    """A selects topics a, b (weight 0.9: past its first epoch), B topics b, c (in its first). A's
    filter changes: it skips what A trained in its epoch in progress, not what B trained in B's; an
    added stream over the same shards starts its first epoch with all its documents."""
    table = _table()
    spec = {"A": 'topic in ["a", "b"]', "B": 'topic in ["b", "c"]'}
    w = {"A": 0.9, "B": 0.1}
    first = _samples(table, spec, w)
    before = 500
    trained = _trained(first, 0, before)
    own = {s.name: _current_epoch(trained[s.name], s.num_documents, table.lengths) for s in first.streams}
    assert len({r for r, a, _ in trained["A"] if a == 0}) < len([u for u in trained["A"] if u[1] == 0])  # epochs >= 1
    second = _samples(table, {"A": 'topic == "b"', "B": spec["B"], "C": 'topic in ["a", "b"]'},
                      {"A": 0.4, "B": 0.3, "C": 0.3})
    diff = second.load_state_dict(_saved(first))
    assert diff["resumes"]["A"]["epoch"] >= 1 and diff["resumes"]["C"]["epoch"] == 0
    assert diff["resumes"]["C"]["documents_left"] == second.streams[2].num_documents and second.streams[2].head is None
    b_trained_only = {r for r, _, _ in own["B"]} - {r for r, _, _ in own["A"]}
    assert b_trained_only & set(second.streams[0].rows.tolist())  # documents the old union rule skipped
    after = _trained(second, before, before + 3000)
    _assert_no_repeat_no_skip(table, own, second, after)


def test_bitmaps_live_in_a_binary_file_beside_the_trainer_state(tmp_path):
    table = _table()
    first = _samples(table, SPEC, W)
    first.sample_ids(np.arange(BEFORE))
    state, arrays = split_bits(first.state_dict())
    text = json.dumps(state)  # what trainer_state.json holds: references, no bits
    assert '"$bits": "b0"' in text and "base64" not in text and len(arrays) == 1
    with pytest.raises(ValueError, match=r"refers to bitmaps in data_bits.npz, which is missing \(copy the whole"):
        load_data_state(json.loads(text), tmp_path)
    write_bits(tmp_path / BITS_FILE, arrays)
    back = load_data_state(json.loads(text), tmp_path)
    np.testing.assert_array_equal(back["ledgers"]["A"]["bits"], arrays["b0"])
    assert back["ledgers"]["A"]["bits"] is back["ledgers"]["B"]["bits"]  # one shared bitmap, read once


def test_version_3_states_with_base64_bitmaps_still_resume_and_edit():
    import base64
    import zlib

    table = _table()
    first = _samples(table, SPEC, W)
    first.sample_ids(np.arange(BEFORE))
    state = first.state_dict()
    v3 = {**state, "version": 3, "ledgers": {
        n: {k: v for k, v in d.items() if k != "shared"} | {"bits": base64.b64encode(zlib.compress(
            np.packbits(d["bits"]).tobytes())).decode()} for n, d in state["ledgers"].items()}}
    same = _samples(table, SPEC, W)
    assert same.load_state_dict(json.loads(json.dumps(v3))) is None
    edited = _samples(table, {**SPEC, "C": 'topic == "c"'}, {"A": 1, "B": 1, "C": 1})
    assert edited.load_state_dict(json.loads(json.dumps(v3)))["added"] == ["C"]


def test_refused_when_a_shard_has_other_tokens():
    lengths = np.random.default_rng(0).integers(5, 90, N)
    lengths[7] += 1
    with pytest.raises(RecipeEditRefused, match=r"^refusing recipe change: shard shard0 has other tokens than at "
                                                 r"the checkpoint .* restore the shard, or train the new tokens"):
        _edit(SPEC, W, {**SPEC, "C": 'topic == "c"'}, {"A": 1, "B": 1, "C": 1}, after_table=_table(lengths=lengths))


def test_refused_when_a_held_out_split_changes():
    table = _table()
    first = _samples(table, SPEC, W)
    first.sample_ids(np.arange(BEFORE))
    state = _saved(first)
    streams = _streams(table, SPEC)
    cfg = dataclasses.replace(streams[0].config, split="train", holdout=0.2)
    table2 = DocumentTable.from_columns(table.lengths, {"topic": list(table.columns["topic"].tolist()),
                                                        "doc_id": np.arange(N)}, source="shard0")
    edited = BlendedSamples([Stream(table2, cfg), streams[1]], W, SEQ, DataConfig(), num_workers=0, prefetch=False)
    with pytest.raises(RecipeEditRefused, match=r"stream 'A': split changed 'all' -> 'train': documents already "
                                                r"trained would move into validation"):
        edited.load_state_dict(state)


def test_refused_from_a_state_without_ledgers():
    table = _table()
    first = _samples(table, SPEC, W)
    first.sample_ids(np.arange(BEFORE))
    state = first.state_dict()
    old = {"version": 2, "blender": state["blender"], "offsets": state["offsets"]}
    same = _samples(table, SPEC, W)
    assert same.load_state_dict(old) is None  # version 2 still resumes with its own streams
    edited = _samples(table, {**SPEC, "C": 'topic == "c"'}, {"A": 1, "B": 1, "C": 1})
    with pytest.raises(RecipeEditRefused, match=r"data state \(version 2\) has no consumed-documents ledger"):
        edited.load_state_dict(old)


# ---------------------------------------------------------------- the real trainer, and `cpt trace`

@pytest.fixture(scope="module")
def edited_run(tmp_path_factory):
    import sys
    from pathlib import Path

    from launch import launch
    from train_fixtures import write_lang_shards

    root = tmp_path_factory.mktemp("recipe_edit")
    prefix = write_lang_shards(root / "lang")
    worker = Path(__file__).parent / "workers" / "recipe_edit_cases.py"
    launch([sys.executable, str(worker), "--prefix", prefix, "--out", str(root / "out")])
    return json.loads((root / "out" / "result.json").read_text()), root / "out" / "run"


@pytest.mark.slow
def test_trainer_logs_each_edit_and_refuses_a_held_out_change(edited_run):
    result, _ = edited_run
    changes = [r for r in result["records"] if r["kind"] == "event" and "recipe_change" in r]
    assert [c["step"] for c in changes] == [2, 4]
    first, second = changes[0]["recipe_change"], changes[1]["recipe_change"]
    assert changes[0]["message"] == ("recipe change at step 2: added ['en_late']; changed ['en']; "
                                     "weights {zh_a: 0.3 -> 0.1, en_late: - -> 0.2}")
    assert first["added"] == ["en_late"] and first["changed"]["en"] == {
        "filter": ['lang == "en" and line <= 40', 'lang == "en" and line <= 20']}
    assert first["weights"]["zh_a"] == pytest.approx([0.3, 0.1]) and first["at_sample"] == 2 * 8
    assert set(second["changed"]) == {"zh_a", "zh_b", "en", "en_late"} and second["at_sample"] == 4 * 8
    assert all(v == {"metadata": "changed (re-tagged or re-scored shards)"} for v in second["changed"].values())
    assert result["refused"].startswith("refusing recipe change: stream 'en': split changed 'all' -> 'train'")


@pytest.mark.slow
def test_trace_across_edits_equals_what_the_trainer_fetched_and_nothing_repeats(edited_run):
    from cpt.trace import open_stages, trace_doc, trace_step

    result, run = edited_run
    fetched = [x for launch_ in ("v1", "v2", "v3") for x in result["seen"][launch_]]
    assert [x[0] for x in fetched] == list(range(6 * 8))
    stages = open_stages([run])
    traced = [s for step in range(1, 7) for s in trace_step(stages, step)]
    names = {"v1": ["en", "zh_a", "zh_b"], "v2": ["en", "zh_a", "zh_b", "en_late"]}
    want = [(pos, names["v1" if pos < 16 else "v2"][stream], index) for pos, stream, index in fetched]
    assert [(s.position, s.stream, s.index) for s in traced] == want
    # every token of every document trained at most once, and each document from its first token on
    cover: dict[str, list[tuple[int, int]]] = {}
    for s in traced:
        pieces = [dict(p) for p in s.pieces]
        pieces[-1]["stop"] -= 1  # the label of the last position: trained by the next sample
        for p in pieces:
            if p["stop"] > p["start"]:
                cover.setdefault(p["doc_id"], []).append((p["start"], p["stop"]))
    for doc, ranges in cover.items():
        ranges.sort()
        assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), (doc, ranges)
    for doc in sorted(cover)[::3]:
        hits = trace_doc(stages, doc)
        assert sorted((h["start"], min(h["stop"], h["start"] + 10**9)) for h in hits)[0][0] == 0
        assert {h["sample"] for h in hits} == {s.sample for s in traced if any(p["doc_id"] == doc for p in s.pieces)}


@pytest.mark.slow
def test_topic_ppl_controller_follows_an_edit_that_drops_and_adds_streams(edited_run):
    """A tiny run with the topic-PPL controller, edited after step 2 (zh_b dropped, en_late added):
    the run goes on, and the controller's first update after the edit moves the new stream set."""
    result, _ = edited_run
    records = result["mixture_records"]
    change = [r for r in records if r["kind"] == "event" and "recipe_change" in r]
    assert len(change) == 1 and change[0]["recipe_change"]["dropped"] == ["zh_b"]
    mixture = [r for r in records if r["kind"] == "mixture"]
    assert [r["step"] for r in mixture] == [1, 2, 3, 4]
    followed = mixture[2]
    assert followed["streams_changed"] == {"dropped": ["zh_b"], "added": ["en_late"]}
    assert set(followed["weights_after"]) == {"en", "zh_a", "en_late"} and followed["delta_ppl"]["en_late"] == 0.0
    assert "streams_changed" not in mixture[3] and set(mixture[3]["delta_ppl"]) == {"en", "zh_a", "en_late"}
