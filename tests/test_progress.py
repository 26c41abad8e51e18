"""Progress: rank 0 draws one bar per epoch (samples, rate, ETA) only when the driver is on a terminal;
other ranks and piped runs print plain per-epoch lines only."""

from __future__ import annotations

from raykit.engine import fit
from raykit.session import WorkerSession
from tests.backends.test_torch import Recorder, tiny_spec


class Bars:
    """A stand-in bar factory that records what the loop did with each bar."""

    def __init__(self):
        self.made: list[dict] = []

    def __call__(self, total: int, description: str):
        bar = {"total": total, "description": description, "done": 0, "closed": False}
        self.made.append(bar)

        class Bar:
            def update(self, n=1):
                bar["done"] += n

            def set_description(self, text):
                bar["description"] = text

            def close(self):
                bar["closed"] = True

        return Bar()


def test_rank_0_gets_one_closed_bar_per_epoch_covering_its_samples(tmp_path):
    for framework in ("torch", "tf"):
        bars = Bars()
        spec = tiny_spec("train.epochs=2", "model.name=mlp", f"framework={framework}")
        fit(spec, WorkerSession(report=Recorder(tmp_path / framework),
                                                                       progress_bar=bars))
        assert [b["description"].split(" batch")[0] for b in bars.made] == ["epoch 1/2", "epoch 2/2"]
        assert all(b["description"].endswith("samples/s (rank 0)") for b in bars.made)
        for bar in bars.made:
            assert bar["closed"] and bar["done"] == 1259 and bar["total"] >= bar["done"]  # the training split


def test_other_ranks_draw_no_bar():
    bars = Bars()
    session = WorkerSession(rank=1, world_size=2, progress_bar=bars)
    session.epoch_bar(100, "epoch 1/1").update(100)
    assert bars.made == []


def test_the_driver_asks_for_bars_only_on_a_terminal(tmp_path):
    from raykit.ray.trainer import build_trainer
    from raykit.ray.worker import _progress_bar

    spec = tiny_spec()
    assert build_trainer(spec, str(tmp_path), progress_bar=True).train_loop_config["progress_bar"] is True
    assert build_trainer(spec, str(tmp_path)).train_loop_config["progress_bar"] is False
    assert _progress_bar({"progress_bar": True}, rank=1) is None and _progress_bar({}, rank=0) is None
    assert callable(_progress_bar({"progress_bar": True}, rank=0))
