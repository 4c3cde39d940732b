"""The Slurm driver's fallback where sacct does not answer: a job is taken as ended without a result
only when squeue shows an end state, or stops listing it on two polls in a row; squeue asked at most
once per interval; a failed squeue call is no news."""
from __future__ import annotations

from cpt.launch.slurm_queue import QueueWatch, parse_queue


def test_parse_queue_reads_one_array_element_per_line():
    text = "17_0|COMPLETED\n17_1|FAILED\n 22|RUNNING \n23|CANCELLED+\nnoise\n"
    assert parse_queue(text) == {"17_0": "COMPLETED", "17_1": "FAILED", "22": "RUNNING", "23": "CANCELLED"}


def test_ended_jobs_by_end_state_or_unlisted_twice_and_polls_rate_limited():
    answers = [{"1": "RUNNING", "2": "OUT_OF_MEMORY", "3": "PENDING"},  # 4 unlisted once: not yet
               {"1": "RUNNING", "3": "PENDING"},  # 2 purged after its end state was seen; 4 unlisted twice
               None,  # squeue failed: nothing is concluded
               {"3": "CANCELLED"}]
    asked = []

    def states(ids):
        asked.append(list(ids))
        return answers[len(asked) - 1]

    watch = QueueWatch(states=states, poll_s=10.0)
    assert watch.ended(["1", "2", "3", "4"], now=0.0) == {"2": "OUT_OF_MEMORY"}
    assert watch.ended(["1", "3", "4"], now=5.0) == {} and len(asked) == 1  # within the interval: not asked
    assert watch.ended(["1", "3", "4"], now=10.0) == {"4": "gone from the queue"}
    assert watch.ended(["1", "3"], now=20.0) == {}
    assert watch.ended(["1", "3"], now=30.0) == {"3": "CANCELLED"}
    assert asked == [["1", "2", "3", "4"], ["1", "3", "4"], ["1", "3"], ["1", "3"]]
    assert watch.ended([], now=100.0) == {} and len(asked) == 4  # nothing unknown: squeue not asked
