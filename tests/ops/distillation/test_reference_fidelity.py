"""The methods as the references run them: dc's inner loop at ipc 10, mtt's learned step size in
evaluation, the share of the reference budget recorded in cell.json, and the DD-Ranking scores."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.distillation import matching, protocol
from synthfactory.ops.distillation.budget import budget_fraction
from synthfactory.ops.distillation.cells import Cell, parse_cell
from synthfactory.ops.distillation.cellstore import read_cell, write_cell
from synthfactory.ops.distillation.matching import (DcSettings, GmInitSettings, dc_loops,
                                                    gradient_matching, gradient_matching_at_init)
from synthfactory.ops.distillation.ranking import dd_ranking_scores, label_robust_score
from synthfactory.ops.distillation.dsa import DEFAULT_DSA
from synthfactory.ops.distillation.recipes import DistilledRepeat, MethodSettings, distill
from synthfactory.ops.distillation.trajectories import train_expert

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks: one thread is ~25× faster than two on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_classes() -> tuple[np.ndarray, np.ndarray]:
    """20 digits of classes 0 and 1 (8 px): 10 a class, enough for ipc 10."""
    data = load_digits(8, 1)
    picks = np.concatenate([np.flatnonzero(data.labels == c)[:10] for c in (0, 1)])
    return data.images[picks], data.labels[picks]


def test_dc_trains_the_network_between_matching_steps_at_ipc_10(
        two_classes: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """With the reference's loops (ipc 10: 10 outer / 50 inner) one iteration makes 10 image
    updates and 9 inner-loop calls of 50 epochs: counted here by wrapping the inner loop, so the
    test fails if dc ever matches at random initialisation again."""
    images, labels = two_classes
    calls: list[int] = []
    inner = matching._train_epochs

    def counting(net, optimizer, images_, targets, epochs, *args):  # type: ignore[no-untyped-def]
        before = [p.detach().clone() for p in net.parameters()]
        steps = inner(net, optimizer, images_, targets, epochs, *args)
        assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
        calls.append(epochs)
        return steps

    monkeypatch.setattr(matching, "_train_epochs", counting)
    result = gradient_matching(images, labels, 2, 10,
                               DcSettings(iterations=1, batch_real=10, width=8, dsa=None),
                               seed=0, device=CPU)
    assert calls == [50] * 9  # outer − 1 calls of `inner_loop` epochs
    history = result.history
    assert (history["outer_loop"], history["inner_loop"]) == (10, 50)
    assert history["image_updates"] == 10 and history["inner_loop_calls"] == 9
    assert history["net_epochs"] == 450 and history["net_updates"] == 450  # 20 images: 1 step


def test_dc_takes_the_reference_loops_and_refuses_the_reduced_run_under_its_name() -> None:
    assert dc_loops(1) == (1, 1) and dc_loops(10) == (10, 50) and dc_loops(50) == (50, 10)
    assert dc_loops(10, 5, 20) == (5, 20)  # explicit params win
    assert DcSettings().iterations is None  # None: the reference's 1000
    with pytest.raises(ValueError, match="method gm_init"):
        dc_loops(10, outer_loop=1)
    with pytest.raises(ValueError, match="set distilled_set.dc.outer_loop"):
        dc_loops(7)
    assert parse_cell("gm_init-ipc10-real") == Cell("gm_init", 10, "real")


def test_gm_init_never_trains_the_network(two_classes: tuple[np.ndarray, np.ndarray],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = two_classes
    monkeypatch.setattr(matching, "_train_epochs", lambda *a: pytest.fail("inner loop ran"))
    result = gradient_matching_at_init(images, labels, 2, 10,
                                       GmInitSettings(iterations=2, batch_real=10, width=8,
                                                      dsa=None), seed=0, device=CPU)
    assert result.history["image_updates"] == 2 and result.history["inner_loop_calls"] == 0


def test_mtt_evaluation_trains_at_the_cells_learned_step_size(
        two_classes: tuple[np.ndarray, np.ndarray], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A distilled mtt cell stores its learned step size; read back, it is the evaluation
    network's optimizer lr (mtt-distillation's `lr_net = syn_lr`), then ÷10 at half."""
    images, labels = two_classes
    experts = [train_expert(images, labels, 2, seed=s, device=CPU, epochs=2, width=8,
                            batch_size=20, dsa=None)[0] for s in range(2)]
    mtt = {"iterations": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1,
           "lr_learning_rate": 1e-4}
    cell = Cell("mtt", 1, "real")
    repeat = distill(cell, images, labels, [str(i) for i in range(len(images))], 2, seed=0,
                     device=CPU, dsa=DEFAULT_DSA,
                     settings=MethodSettings(dm={}, dc={}, mtt=mtt, width=8),
                     trajectories=experts)
    assert repeat.learned_lr is not None and repeat.learned_lr != pytest.approx(0.01)
    write_cell(tmp_path, cell, [repeat], {"settings": mtt})
    stored = read_cell(tmp_path)[0]
    assert stored.learned_lr == pytest.approx(repeat.learned_lr)

    rates: list[list[float]] = []
    sgd = torch.optim.SGD

    class Recording(sgd):  # type: ignore[misc, valid-type]
        def step(self, closure=None):  # type: ignore[no-untyped-def]
            rates.append([group["lr"] for group in self.param_groups])
            return super().step(closure)

    monkeypatch.setattr(protocol.torch.optim, "SGD", Recording)
    _, trained = protocol.train_network(stored.images, stored.targets, 2, seed=0, device=CPU,
                                        epochs=4, width=8, learning_rate=0.01,
                                        learned_lr=stored.learned_lr)
    assert trained["learning_rate"] == pytest.approx(stored.learned_lr)
    assert trained["learning_rate_source"] == "learned_lr"
    assert rates[0] == [pytest.approx(stored.learned_lr)]
    assert rates[-1] == [pytest.approx(stored.learned_lr * 0.1)]
    # the control: no learned rate, the protocol's
    _, control = protocol.train_network(stored.images, stored.targets, 2, seed=0, device=CPU,
                                        epochs=1, width=8, learning_rate=0.01)
    assert control["learning_rate"] == 0.01 and control["learning_rate_source"] == \
        "eval.learning_rate"
    with pytest.raises(ValueError, match="diverged"):
        protocol.evaluation_learning_rate(0.01, -0.002)


def test_budget_fraction_against_the_references() -> None:
    dc = budget_fraction("dc", 10, {"iterations": 100},
                         {"iterations": 100, "outer_loop": 10, "inner_loop": 50,
                          "image_updates": 1000, "net_epochs": 100 * 9 * 50})
    assert dc["basis"] == "image_updates" and dc["fraction"] == 0.1  # 1000 / (1000 × 10)
    assert dc["ratios"]["net_epochs"] == 0.1  # 45,000 / (1000 × 9 × 50)
    reduced = budget_fraction("gm_init", 10, {"iterations": 100},
                              {"iterations": 100, "outer_loop": 1, "inner_loop": 0,
                               "image_updates": 100, "net_epochs": 0})
    assert reduced["fraction"] == 0.01 and reduced["ratios"]["net_epochs"] == 0.0
    assert budget_fraction("dm", 10, {"iterations": 500}, {"iterations": 500})["fraction"] \
        == 0.025
    mtt = budget_fraction("mtt", 1, {"iterations": 200, "expert_epochs": 2,
                                     "max_start_epoch": 10, "syn_steps": 20},
                          {"iterations": 200, "experts": 5, "expert_epochs": 30})
    assert mtt["fraction"] == 0.04 and mtt["ratios"]["expert_epochs_total"] == 0.03
    assert mtt["ratios"]["expert_epochs"] == pytest.approx(2 / 3, abs=1e-6)
    assert mtt["reference"]["max_start_epoch"] == 25
    assert budget_fraction("random", 10, {}, {}) is None


def test_cell_json_records_settings_and_budget_fraction(tmp_path: Path) -> None:
    repeat = DistilledRepeat(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 1]),
                             history={"iterations": 3, "outer_loop": 1, "inner_loop": 1,
                                      "image_updates": 3, "net_epochs": 0})
    record = write_cell(tmp_path, Cell("dc", 1, "real"), [repeat],
                        {"settings": {"iterations": 3}})
    stored = json.loads((tmp_path / "cell.json").read_text())
    assert stored["settings"] == {"iterations": 3} and record["budget_fraction"]["fraction"] \
        == 0.003
    assert stored["budget_fraction"]["reference"]["image_updates"] == 1000


def test_dd_ranking_scores_by_hand() -> None:
    """Computed by hand from ddranking 0.2.0's lines (the package does not import here: it
    needs kornia and timm, and its formula is inline in `compute_metrics`, behind training):
    hlr = full − syn_hard; ior = syn − random; alpha = λ·ior − (1 − λ)·hlr;
    lrs = (e^alpha − e^−1) / (e − e^−1), λ = 0.5."""
    hard = dd_ranking_scores(0.90, 0.70, 0.98)
    assert hard.ior == pytest.approx(0.20) and hard.hlr == pytest.approx(0.08)
    # alpha = 0.5 × 0.20 − 0.5 × 0.08 = 0.06; (1.0618365 − 0.3678794) / (2.7182818 − 0.3678794)
    assert hard.lrs == pytest.approx(0.6939571 / 2.3504024, abs=1e-7)
    assert hard.lrs == pytest.approx(0.2952503, abs=1e-7) and hard.mode == "hard"
    # soft-label mode: IOR from soft-label accuracies, HLR from the hard-label control
    soft = dd_ranking_scores(0.95, 0.85, 0.98, distilled_hard=0.90)
    assert soft.ior == pytest.approx(0.10) and soft.hlr == pytest.approx(0.08)
    assert soft.lrs == pytest.approx((math.exp(0.01) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert soft.mode == "soft"
    # paired runs: the mean of per-run scores, as the package (not LRS of the mean accuracies)
    runs = dd_ranking_scores([0.90, 0.80], [0.65, 0.65], 0.95)
    assert runs.per_run["ior"] == pytest.approx([0.25, 0.15])
    assert runs.lrs == pytest.approx((label_robust_score(0.25, 0.05)
                                      + label_robust_score(0.15, 0.15)) / 2)
    # the ends of the [0, 1] scale
    assert label_robust_score(1.0, 0.0, weight=1.0) == pytest.approx(1.0)
    assert label_robust_score(0.0, 1.0, weight=0.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="fractions, not percent"):
        dd_ranking_scores(90.0, 70.0, 98.0)
    with pytest.raises(ValueError, match="equal lengths"):
        dd_ranking_scores([0.9, 0.8], [0.7, 0.7, 0.7], 0.98)


def test_the_whole_source_is_one_cell_per_source_and_never_the_headline() -> None:
    """`whole` has no ipc: one `whole-<source>` cell per source at its place in the table; a key
    with an ipc is not a whole cell; the params refuse it as the first (headline) method."""
    from synthfactory.ops.distillation.cells import cells
    from synthfactory.params import parse_params
    from tests.support import tiny_params

    table = cells(["random", "dm", "whole"], [1, 10], ["real", "filtered"])
    assert [cell.key for cell in table] == [
        "random-ipc1-real", "random-ipc10-real", "dm-ipc1-real", "dm-ipc10-real", "whole-real",
        "random-ipc1-filtered", "random-ipc10-filtered", "dm-ipc1-filtered",
        "dm-ipc10-filtered", "whole-filtered"]
    assert parse_cell("whole-real") == Cell("whole", 0, "real")
    assert parse_cell(Cell("whole", 0, "real").key) == Cell("whole", 0, "real")
    for bad in ("whole-ipc10-real", "whole-cifar"):
        with pytest.raises(ValueError, match="whole-<source>"):
            parse_cell(bad)
    with pytest.raises(ValueError, match="list it after another method"):
        parse_params(tiny_params(Path("unused"), distilled_set={"methods": ["whole", "dm"]}))


def test_the_whole_cell_holds_every_source_image_as_the_protocol_trains_on_them() -> None:
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1)
    labels = np.array([0, 0, 1, 1, 2, 2])
    whole = distill(Cell("whole", 0, "real"), images, labels, [f"k{i}" for i in range(6)], 3,
                    seed=0, device=CPU, dsa=DEFAULT_DSA,
                    settings=MethodSettings(dm={}, dc={}, mtt={}))
    assert whole.images.shape == (6, 1, 4, 4) and whole.labels.tolist() == labels.tolist()
    assert whole.origins == [f"k{i}" for i in range(6)] and whole.soft_labels is None
    assert whole.images.min() == -1.0 and budget_fraction("whole", 0, {}, {}) is None


def _row(method: str, ipc: int, accuracy: float, source: str = "real") -> dict:
    return {"cell": Cell(method, ipc, source).key, "method": method, "ipc": ipc,
            "source": source, "architecture": "convnet", "accuracy_mean": accuracy}


def test_dd_ranking_rows_score_each_cell_against_random_and_the_whole_real_set() -> None:
    """IOR against the random cell of the same ipc and source, HLR against `whole-real`, LRS
    from both (the values `dd_ranking_scores` gives); what is missing is named, not zeroed."""
    from synthfactory.ops.evaluation.distillation_table import with_dd_ranking

    rows = [_row("random", 10, 0.70), _row("dm", 10, 0.90), _row("dm", 1, 0.60),
            _row("whole", 0, 0.98), _row("dm", 10, 0.85, "filtered")]
    ranked = with_dd_ranking(rows, "hard")
    assert ranked[0]["dd_ranking"] is None and ranked[3]["dd_ranking"] is None
    dm10 = ranked[1]["dd_ranking"]
    expected = dd_ranking_scores(0.90, 0.70, 0.98)
    assert (dm10["ior"], dm10["hlr"], dm10["lrs"]) == pytest.approx(
        (expected.ior, expected.hlr, expected.lrs))
    assert dm10["random"] == "random-ipc10-real" and dm10["whole"] == "whole-real"
    assert dm10["missing"] == [] and "2505.13300" in dm10["definition"]
    # no random cell at ipc 1 (nor for the filtered source): no IOR, no LRS, and why; HLR alone
    for row in (ranked[2], ranked[4]):
        assert row["dd_ranking"]["ior"] is None and row["dd_ranking"]["lrs"] is None
        assert "add random to distilled_set.methods" in row["dd_ranking"]["missing"][0]
    assert ranked[2]["dd_ranking"]["hlr"] == pytest.approx(0.98 - 0.60)
    # without the whole real set: IOR alone
    partial = with_dd_ranking(rows[:2], "hard")[1]["dd_ranking"]
    assert partial["ior"] == pytest.approx(0.20) and partial["hlr"] is None
    assert "add whole to distilled_set.methods" in partial["missing"][0]
    assert with_dd_ranking(rows, "hard")[1] == {**rows[1], "dd_ranking": dm10}  # rows kept
    # soft labels: IOR from the soft-label accuracies, HLR from the hard-label control
    soft_rows = [rows[0], {**rows[1], "hard_label_control": {"accuracy_mean": 0.86}}, rows[3]]
    soft = with_dd_ranking(soft_rows, "soft")[1]["dd_ranking"]
    expected = dd_ranking_scores(0.90, 0.70, 0.98, distilled_hard=0.86)
    assert soft["mode"] == "soft" and (soft["ior"], soft["hlr"], soft["lrs"]) == pytest.approx(
        (expected.ior, expected.hlr, expected.lrs)) and soft["missing"] == []
    # a soft row without its control: IOR only, and why
    lacking = with_dd_ranking(rows, "soft")[1]["dd_ranking"]
    assert lacking["ior"] == pytest.approx(0.20) and lacking["hlr"] is None
    assert "without the hard-label control" in lacking["missing"][0]


def test_the_report_names_the_protocol_the_table_used() -> None:
    from synthfactory.ops.report.distillation_table import dd_ranking_table, protocol_line

    def protocol(epochs: int, networks: int, source: str = "eval.learning_rate") -> dict:
        return {"epochs": [epochs], "networks_per_repeat": networks,
                "learning_rates": [0.01], "learning_rate_source": [source]}

    fast = [{**_row("dm", 10, 0.9), "protocol": protocol(300, 5)},
            {**_row("mtt", 10, 0.9), "protocol": protocol(300, 5, "learned_lr")}]
    line = protocol_line(fast)
    assert line.startswith("Protocol: 300 epochs, 5 networks per distilled repeat, "
                           "learning rate 0.01, the learned step size for mtt-ipc10-real")
    assert "learning rate" not in protocol_line(fast[1:])  # every cell at its learned rate
    assert "not the reference protocol" in line
    assert protocol_line([{**_row("dm", 10, 0.9), "protocol": protocol(1000, 20)}]).endswith(
        "— the reference protocol.")
    assert dd_ranking_table(fast) is None  # no scores, no table


def test_the_reference_config_runs_every_method_at_its_reference_budget() -> None:
    """configs/digits-distillation-reference.yaml: every ratio of each learned method's budget
    to the reference's is 1 (the experts as buffer.py trains them), the reference evaluation
    protocol, 3 repeats, 5 random draws and the whole real set."""
    from synthfactory.params import load_params
    from tests.support import PROJECT_ROOT

    params = load_params(PROJECT_ROOT / "configs" / "digits-distillation-reference.yaml").params
    table = params.distilled_set
    assert (table.eval.epochs, table.eval_models, table.repeats, table.random_draws) == (
        1000, 20, 3, 5)
    assert table.methods[-1] == "whole" and table.eval.use_learned_lr
    experts = params.expert_trajectories
    dm = budget_fraction("dm", 10, table.dm.model_dump(), {})
    mtt = budget_fraction("mtt", 10, table.mtt.model_dump(),
                          {"iterations": table.mtt.iterations, "experts": experts.experts,
                           "expert_epochs": experts.epochs})
    assert dm["fraction"] == 1.0 and set(mtt["ratios"].values()) == {1.0}
    # dc: null iterations and loops are the reference's (matching.dc_loops)
    assert table.dc.iterations is None and dc_loops(10, None, None) == (10, 50)
