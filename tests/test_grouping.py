"""K samples per question, regrouped from episodes that finish in any order."""

from env.record import EpisodeRecord
from webagent.rollout import grouped


def test_each_question_comes_out_with_its_samples_in_order_as_soon_as_complete():
    records = {
        i: EpisodeRecord(id=str(i), question=f"q{i // 3}", source="wiki", meta={"sample": i % 3})
        for i in range(6)
    }
    finished = [(i, records[i]) for i in (4, 0, 1, 3, 5, 2)]  # question 1 completes first
    seen = []

    def stream():
        for item in finished:
            seen.append(item[0])
            yield item

    out = []
    for question, group in grouped(stream(), 3):
        out.append((question, [r.meta["sample"] for r in group], len(seen)))
    assert out == [(1, [0, 1, 2], 5), (0, [0, 1, 2], 6)]
