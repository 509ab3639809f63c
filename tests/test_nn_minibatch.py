"""Mini-batch one-shot training that converges: residual-driven iterations and the switch to exact solves.

The adaptive one-shot mode (``one_shot=True`` with ``rel_tol`` /
``rel_tol_adjoint``) stops each gradient's MGRIT iterations at a relative
residual reduction; ``switch_to_exact`` continues in the exact mode once the
epoch loss stalls. Checked: the settings' errors, the stopping rule on every
gradient, training on peaks with mini-batches to serial training's accuracy
where the fixed two-iteration one-shot mode diverges, the switch (when, what it
solves afterwards, across a checkpoint), 1 against 2 ranks, and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid.nn.trainer import _stalled_at

ADAPTIVE = dict(max_levels=3, cfactor=2, one_shot=True, rel_tol=1e-2, rel_tol_adjoint=1e-2, max_iter=20)
DATA = xb.datasets.make_peaks(300, 100, seed=3)
SMALL = dict(in_features=2, width=4, depth=16, classes=5, T=2.0, tikhonov=1e-4, smoothness=1e-4, seed=2)


def _trainer(lp, lr=0.2, **kw):
    return nn.Trainer(nn.ResNet(**SMALL), optimizer=nn.Adam(lr=lr), layer_parallel=lp, seed=1, progress=False, **kw)


def _fit(trainer, epochs, **kw):
    return trainer.fit(DATA.x_train, DATA.y_train, epochs=epochs, batch_size=50, **kw)


@pytest.mark.parametrize(
    ("lp", "error", "message"),
    [
        (dict(ADAPTIVE, abs_tol=1e-6), ValueError, r"both 'abs_tol' and 'rel_tol': give one of them"),
        (dict(ADAPTIVE, abs_tol_adjoint=1e-6), ValueError, r"both 'abs_tol_adjoint' and 'rel_tol_adjoint'"),
        (dict(ADAPTIVE, rel_tol=-1.0), ValueError, r"rel_tol"),
        (dict(ADAPTIVE, switch_to_exact=0), ValueError, r"switch_to_exact'\] must be >= 1 \(epochs\), got 0"),
        (dict(ADAPTIVE, switch_to_exact=1.5), TypeError, r"switch_to_exact'\] must be a positive integer or None"),
        (dict(ADAPTIVE, switch_to_exact=True), TypeError, r"switch_to_exact'\] must be a positive integer"),
        (dict(max_levels=3, switch_to_exact=2), ValueError, r"switch_to_exact'\] needs one_shot=True"),
        (dict(ADAPTIVE, warm=True), TypeError, r"unknown key\(s\) 'warm'; known: .*rel_tol.*switch_to_exact"),
    ],
)
def test_bad_adaptive_settings_name_the_key(lp, error, message):
    with pytest.raises(error, match=message):
        _trainer(lp)


def test_relative_tolerances_replace_the_absolute_ones():
    trainer = _trainer(dict(ADAPTIVE))
    assert trainer._options["rel_tol"] == 1e-2 and "abs_tol" not in trainer._options
    exact = _trainer(dict(max_levels=3, rel_tol=1e-8))
    assert exact.mode == "exact" and exact._options["rel_tol"] == 1e-8 and exact._options["abs_tol_adjoint"] == 1e-10


def test_stalled_at():
    assert _stalled_at([], 1) is None
    assert _stalled_at([1.0, 0.5, 0.5], 1) == 3  # equal is no better
    assert _stalled_at([1.0, 0.5, 0.6, 0.4, 0.7], 1) == 3
    assert _stalled_at([1.0, 0.5, 0.6, 0.4, 0.7], 2) is None
    assert _stalled_at([1.0, 0.5, 0.6, 0.7], 2) == 4
    assert _stalled_at([1.0, float("nan"), 0.9], 1) == 2  # a NaN epoch is no better


def test_every_adaptive_gradient_stops_at_the_relative_reduction():
    trainer = _trainer(dict(ADAPTIVE))
    solves = []
    evaluate = trainer._evaluate_batch

    def record(*args):
        out = evaluate(*args)
        solves.append(trainer.last_solve)
        return out

    trainer._evaluate_batch = record
    _fit(trainer, 3)
    assert len(solves) == 18
    counts = set()
    for s in solves:
        r, a = s.residual_norms, s.adjoint_residual_norms
        assert s.converged and 1 <= s.iterations < 20
        counts.add(s.iterations)
        # XBraid's relative test: below rel_tol times the first iteration's norm, and not one iteration earlier
        assert r[-1] < 1e-2 * r[0] or a[-1] < 1e-2 * a[0]
        assert r[-1] < 1e-2 * r[0] and a[-1] < 1e-2 * a[0]
        assert not (r[-2] < 1e-2 * r[0] and a[-2] < 1e-2 * a[0])
    assert len(counts) > 1  # the iterations adapt (2 to 4 here), unlike one-shot's fixed max_iter


def test_adaptive_one_shot_trains_peaks_with_minibatches_where_fixed_one_shot_diverges():
    """Adam, mini-batches of 100, depth 30 (the CLI's peaks network), 8 epochs: serial's accuracy, not divergence."""
    data = xb.datasets.peaks()
    config = dict(in_features=2, width=8, depth=30, classes=5, T=1.0, tikhonov=1e-5, smoothness=1e-5, seed=1)
    histories = {}
    for name, lp in {
        "serial": None,
        "adaptive": dict(max_levels=3, cfactor=4, one_shot=True, rel_tol=1e-2, rel_tol_adjoint=1e-2, max_iter=20),
        "fixed": dict(max_levels=3, cfactor=4, one_shot=True, max_iter=2),
    }.items():
        trainer = nn.Trainer(nn.ResNet(**config), optimizer=nn.Adam(lr=0.01), layer_parallel=lp, seed=1, progress=False)
        try:
            histories[name] = trainer.fit(
                data.x_train, data.y_train, epochs=8, batch_size=100, validation=(data.x_val, data.y_val)
            )
        except FloatingPointError:
            histories[name] = None
    serial, adaptive, fixed = histories["serial"], histories["adaptive"], histories["fixed"]
    assert adaptive.loss[-1] < 0.5 * adaptive.loss[0]
    assert abs(adaptive.val_accuracy[-1] - serial.val_accuracy[-1]) <= 0.02, (
        adaptive.val_accuracy,
        serial.val_accuracy,
    )
    np.testing.assert_allclose(adaptive.loss, serial.loss, rtol=0.05)
    # two iterations from a cold guess per batch: the loss blows up (or overflows)
    assert fixed is None or fixed.loss[-1] > 10 * serial.loss[-1]


def test_switch_to_exact_when_the_loss_stalls_and_solve_exactly_afterwards():
    trainer = _trainer(dict(ADAPTIVE, switch_to_exact=1))
    history = _fit(trainer, 10)
    assert trainer.switched_to_exact_at == 9 == _stalled_at(history.loss, 1)
    assert history.loss[8] >= min(history.loss[:8])
    last = trainer.last_solve  # the last gradient of epoch 10: an exact one
    assert last.residual_norms[-1] <= 1e-10 and last.adjoint_residual_norms[-1] <= 1e-10
    assert history.mgrit_iterations[-1] > max(history.mgrit_iterations[:9])
    patient = _trainer(dict(ADAPTIVE, switch_to_exact=2))
    _fit(patient, 9)
    assert patient.switched_to_exact_at is None
    # without switch_to_exact the one-shot trainer never switches
    plain = _trainer(dict(ADAPTIVE))
    assert _fit(plain, 10).loss[:9] == history.loss[:9] and plain.switched_to_exact_at is None


def test_a_resumed_run_continues_in_the_mode_it_had_reached(tmp_path):
    lp = dict(ADAPTIVE, switch_to_exact=1)
    straight = _trainer(lp)
    expected = _fit(straight, 10)
    first = _trainer(lp)
    _fit(first, 9, checkpoint=tmp_path / "c.npz")
    assert first.switched_to_exact_at == 9
    resumed = _trainer(lp)
    history = _fit(resumed, 10, checkpoint=tmp_path / "c.npz", resume=True)
    assert resumed.switched_to_exact_at == 9
    assert history.loss == expected.loss
    np.testing.assert_array_equal(resumed.net.local_parameters, straight.net.local_parameters)


def test_adaptive_one_shot_on_two_ranks_matches_one_rank(mpirun, tmp_path):
    code = f"""
import json
from mpi4py import MPI
import pyxbraid as xb
from pyxbraid import nn
d = xb.datasets.make_peaks(300, 100, seed=3)
lp = {dict(ADAPTIVE, switch_to_exact=1)!r}
t = nn.Trainer(nn.ResNet(**{SMALL!r}), comm=MPI.COMM_WORLD, optimizer=nn.Adam(lr=0.2), layer_parallel=lp, seed=1,
               progress=False)
h = t.fit(d.x_train, d.y_train, epochs=10, batch_size=50)
if MPI.COMM_WORLD.Get_rank() == 0:
    print("RESULT " + json.dumps(dict(loss=h.loss, its=h.mgrit_iterations, switched=t.switched_to_exact_at)))
"""
    one = _trainer(dict(ADAPTIVE, switch_to_exact=1))
    h = _fit(one, 10)
    out = mpirun(code, 2, timeout=180).stdout
    got = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert got["switched"] == one.switched_to_exact_at == 9
    assert got["its"] == h.mgrit_iterations
    np.testing.assert_allclose(got["loss"], h.loss, rtol=1e-10)


CLI = ["peaks", "--mode", "one-shot", "--batch-size", "100", "--epochs", "3", "--no-plots", "--no-progress"]


def test_cli_one_shot_with_minibatches_is_adaptive(tmp_path, capsys):
    from pyxbraid import train as cli

    metrics = tmp_path / "m.json"
    assert cli.main([*CLI, "--out", str(tmp_path), "--metrics", str(metrics)]) == 0
    assert "mode one-shot (adaptive: rel-tol 0.01, switch to exact after 2)" in capsys.readouterr().out
    m = json.loads(Path(metrics).read_text())
    lp = m["settings"]["layer_parallel"]
    assert (lp["rel_tol"], lp["rel_tol_adjoint"], lp["max_iter"], lp["switch_to_exact"]) == (0.01, 0.01, 20, 2)
    assert m["switched_to_exact_at"] is None and m["history"]["loss"][-1] < m["history"]["loss"][0]
    assert cli.main([*CLI, "--rel-tol", "0.001", "--switch-to-exact", "1", "--out", str(tmp_path)]) == 0
    assert "adaptive: rel-tol 0.001, switch to exact after 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["--mode", "parallel", "--rel-tol", "0.01"],
        ["--mode", "one-shot", "--switch-to-exact", "2"],  # full batch: the paper's one-shot, no switch
        ["--mode", "serial", "--batch-size", "50", "--switch-to-exact", "2"],
    ],
)
def test_cli_adaptive_flags_need_one_shot_with_minibatches(capsys, args):
    from pyxbraid import train as cli

    with pytest.raises(SystemExit) as info:
        cli.main(["peaks", *args, "--no-plots", "--no-progress"])
    assert info.value.code == 2
    assert "needs --mode one-shot with a mini-batch --batch-size" in capsys.readouterr().err
