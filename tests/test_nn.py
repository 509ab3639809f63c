"""pyxbraid.nn: native ResNet layers, the three training modes, distribution, optimisers, errors.

Every gradient is checked against plain numpy backpropagation (tests/nn_reference.py)
and finite differences; MGRIT modes against the layer-serial mode; 2 and 3 ranks
against 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nn_reference as ref
import numpy as np
import pytest

import pyxbraid as xb
from pyxbraid import nn

HERE = Path(__file__).resolve().parent


def small_data(n=40, seed=3):
    d = xb.datasets.make_peaks(n, 20, seed=seed)
    return d.x_train, d.y_train


def trainer_for(net, lp=None, **kw):
    return nn.Trainer(net, layer_parallel=lp, progress=False, **kw)


VARIANTS = [
    dict(activation="smooth_relu", opening="dense", bias="channel"),
    dict(activation="tanh", opening="dense", bias="scalar"),
    dict(activation="relu", opening="zero_pad", bias="channel"),
    dict(activation="tanh", opening="zero_pad", bias="scalar", tikhonov=1e-2, smoothness=1e-2),
    dict(activation="smooth_relu", opening="dense", bias="channel", tikhonov=1e-3, smoothness=5e-3),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_layer_serial_gradient_equals_numpy_backprop(variant):
    x, y = small_data()
    net = nn.ResNet(2, 4, 7, 5, T=1.5, seed=2, **variant)
    loss, grad = trainer_for(net).loss_and_gradient(x, y)
    ref_loss, ref_grad = ref.loss_and_gradient(net.parameters(), x, y, net.config)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert ref.max_relative_error(net.full_dict(grad), ref_grad) < 1e-10


def test_gradient_equals_finite_differences():
    x, y = small_data()
    net = nn.ResNet(2, 4, 6, 5, activation="tanh", tikhonov=1e-3, smoothness=1e-3, seed=5)
    trainer = trainer_for(net)
    _, grad = trainer.loss_and_gradient(x, y)
    rng = np.random.default_rng(0)
    params = net.local_parameters
    eps = 1e-6
    for k in rng.choice(params.size, 25, replace=False):
        old = params[k]
        params[k] = old + eps
        plus, _ = trainer.loss_and_gradient(x, y)
        params[k] = old - eps
        minus, _ = trainer.loss_and_gradient(x, y)
        params[k] = old
        fd = (plus - minus) / (2 * eps)
        assert grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-9), k


@pytest.mark.parametrize(
    "lp",
    [
        dict(max_levels=2, cfactor=2),
        dict(max_levels=3, cfactor=2),
        dict(max_levels=2, cfactor=4, nrelax=0),
        dict(max_levels=4, cfactor=2, storage=0),
    ],
    ids=str,
)
def test_exact_layer_parallel_equals_layer_serial(lp):
    x, y = small_data()
    config = dict(in_features=2, width=4, depth=16, classes=5, activation="smooth_relu", smoothness=1e-3, seed=1)
    serial_loss, serial_grad = trainer_for(nn.ResNet(**config)).loss_and_gradient(x, y)
    net = nn.ResNet(**config)
    trainer = trainer_for(net, dict(lp, abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=80))
    loss, grad = trainer.loss_and_gradient(x, y)
    assert trainer.last_solve.converged and trainer.last_solve.iterations > 1
    assert loss == pytest.approx(serial_loss, rel=1e-12)
    assert np.linalg.norm(grad - serial_grad) / np.linalg.norm(serial_grad) < 1e-10


def test_mgrit_forward_equals_serial_forward():
    x, _ = small_data()
    net = nn.ResNet(2, 4, 16, 5, seed=9)
    states = {}
    for ml in (1, 3):
        app = net.batch_app(x.shape[0])
        app.set_batch(x, None)
        solver = xb.Solver(app, 0.0, 1.0, 16, max_levels=ml, cfactor=2, abs_tol=1e-13)
        solver.solve()
        states[ml] = solver.state_at(16)
    reference_logits = ref.forward_logits(net.parameters(), x, net.config)
    P = net.parameters()
    np.testing.assert_allclose(states[3], states[1], rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        states[1] @ P["classifier.weight"].T + P["classifier.bias"], reference_logits, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(trainer_for(net).predict_logits(x), reference_logits, rtol=1e-12, atol=1e-12)


def test_one_shot_with_converged_adjoint_equals_serial_gradient():
    x, y = small_data()
    config = dict(in_features=2, width=4, depth=16, classes=5, seed=1)
    serial_loss, serial_grad = trainer_for(nn.ResNet(**config)).loss_and_gradient(x, y)
    trainer = trainer_for(nn.ResNet(**config), dict(max_levels=3, cfactor=2, max_iter=40, one_shot=True))
    loss, grad = trainer.loss_and_gradient(x, y)
    assert trainer.last_solve.iterations == 40
    assert trainer.last_solve.adjoint_residual_norms[-1] < 1e-12
    assert loss == pytest.approx(serial_loss, rel=1e-12)
    assert np.linalg.norm(grad - serial_grad) / np.linalg.norm(serial_grad) < 1e-10


def test_one_shot_is_inexact_with_few_iterations_and_warm_restarts_improve_it():
    x, y = small_data()
    config = dict(in_features=2, width=4, depth=32, classes=5, seed=1, activation="tanh")
    _, serial_grad = trainer_for(nn.ResNet(**config)).loss_and_gradient(x, y)
    trainer = trainer_for(nn.ResNet(**config), dict(max_levels=3, cfactor=4, max_iter=1, one_shot=True))
    errors = []
    for _ in range(6):  # same batch, same parameters: each call continues the iteration
        _, grad = trainer.loss_and_gradient(x, y) if not errors else trainer._evaluate_batch(x, y, "same")
        errors.append(np.linalg.norm(grad - serial_grad) / np.linalg.norm(serial_grad))
    assert errors[0] > 1e-3  # one iteration from the initial guess is not exact
    assert errors[-1] < 1e-3 * errors[0]  # warm restarts converge to the exact gradient


def run_one_shot(seed):
    d = xb.datasets.make_peaks(200, 50, seed=1)
    net = nn.ResNet(2, 8, 16, 5, seed=seed, smoothness=1e-4)
    trainer = trainer_for(net, dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True), optimizer=nn.LBFGS())
    history = trainer.fit(d.x_train, d.y_train, epochs=15, validation=(d.x_val, d.y_val))
    return history, trainer, d


def test_one_shot_training_decreases_the_loss_and_is_reproducible():
    h1, trainer, d = run_one_shot(3)
    assert h1.loss[-1] < 0.6 * h1.loss[0]
    exact_start = nn.Trainer(nn.ResNet(2, 8, 16, 5, seed=3, smoothness=1e-4), progress=False).evaluate(
        d.x_train, d.y_train
    )[0]
    assert trainer.evaluate(d.x_train, d.y_train)[0] < 0.6 * exact_start  # the exact loss too
    assert all(np.isfinite(h1.residual)) and all(0 < i == 2 for i in h1.mgrit_iterations)
    h2, _, _ = run_one_shot(3)
    assert h2.as_dict() | {"wall_seconds": None} == h1.as_dict() | {"wall_seconds": None}
    h3, _, _ = run_one_shot(4)
    assert h3.loss != h1.loss


@pytest.mark.parametrize(
    "make_optimizer", [lambda: nn.SGD(lr=0.05), lambda: nn.Adam(lr=0.02), nn.LBFGS], ids=["sgd", "adam", "lbfgs"]
)
@pytest.mark.parametrize("lp", [None, dict(max_levels=2, cfactor=4)], ids=["serial", "exact"])
def test_training_learns_peaks_subset(make_optimizer, lp):
    optimizer = make_optimizer()
    d = xb.datasets.make_peaks(400, 100, seed=2)
    net = nn.ResNet(2, 8, 12, 5, seed=1)
    trainer = trainer_for(net, lp, optimizer=optimizer, seed=5)
    batch = None if isinstance(optimizer, nn.LBFGS) else 50
    history = trainer.fit(d.x_train, d.y_train, epochs=12, batch_size=batch, validation=(d.x_val, d.y_val))
    assert len(history.loss) == 12 and len(history.step_loss) == 12 * (1 if batch is None else 8)
    assert history.loss[-1] < 0.75 * history.loss[0]
    assert history.val_accuracy[-1] > 0.5
    assert trainer.predict(d.x_val).shape == (100,)


def test_shuffled_minibatches_are_seeded_and_see_every_class():
    d = xb.datasets.peaks()  # sorted by class
    net = nn.ResNet(2, 4, 4, 5)
    trainer = trainer_for(net, optimizer=nn.SGD(lr=0.01))
    original = trainer._evaluate_batch
    labels = []

    def spy(x, y, token):
        labels.append(y.copy())
        return original(x, y, token)

    trainer._evaluate_batch = spy
    trainer.fit(d.x_train[::10], d.y_train[::10], epochs=1, batch_size=50)
    assert all(len(np.unique(batch)) >= 3 for batch in labels)  # sorted data, shuffled batches
    again = []
    trainer2 = trainer_for(nn.ResNet(2, 4, 4, 5), optimizer=nn.SGD(lr=0.01))
    original2 = trainer2._evaluate_batch
    trainer2._evaluate_batch = lambda x, y, t: (again.append(y.copy()), original2(x, y, t))[1]
    trainer2.fit(d.x_train[::10], d.y_train[::10], epochs=1, batch_size=50)
    assert all(np.array_equal(a, b) for a, b in zip(labels, again, strict=True))


def test_save_and_load_round_trip(tmp_path):
    net = nn.ResNet(2, 4, 5, 3, activation="tanh", bias="scalar", tikhonov=0.5, seed=11)
    path = tmp_path / "net.npz"
    net.save(path)
    back = nn.ResNet.load(path)
    assert back.config == net.config
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)


def test_parameters_and_set_parameters():
    net = nn.ResNet(2, 3, 4, 2, seed=1)
    P = net.parameters()
    assert {k: v.shape for k, v in P.items()} == {
        "opening.weight": (3, 2),
        "opening.bias": (3,),
        "layers.weight": (4, 3, 3),
        "layers.bias": (4, 3),
        "classifier.weight": (2, 3),
        "classifier.bias": (2,),
    }
    assert sum(v.size for v in P.values()) == net.num_parameters == net.local_num_parameters
    P["layers.weight"][2] += 1.0
    net.set_parameters(P)
    np.testing.assert_array_equal(net.parameters()["layers.weight"][2], P["layers.weight"][2])
    # seeded, documented initialisation: layer k draws from default_rng([seed, k + 1])
    W3 = np.random.default_rng([1, 4]).standard_normal((3, 3)) / 3
    np.testing.assert_array_equal(nn.ResNet(2, 3, 4, 2, seed=1).parameters()["layers.weight"][3], W3)


@pytest.mark.parametrize("nprocs", [2, 3])
def test_ranks_give_the_same_loss_gradient_and_models(mpirun, tmp_path, nprocs):
    x, y = xb.datasets.make_peaks(60, 10, seed=4).x_train, xb.datasets.make_peaks(60, 10, seed=4).y_train
    config = dict(
        in_features=2, width=4, depth=9, classes=5, T=1.0, activation="tanh", tikhonov=1e-3, smoothness=1e-3, seed=7
    )
    serial_loss, serial_grad = trainer_for(nn.ResNet(**config)).loss_and_gradient(x, y)
    reference = nn.ResNet(**config)
    serial_grad = reference.full_dict(serial_grad)
    # a model trained on one rank, to be loaded on nprocs ranks
    trained = nn.ResNet(**config)
    trainer_for(trained, optimizer=nn.Adam(lr=0.05)).fit(x, y, epochs=3)
    saved = tmp_path / "one_rank.npz"
    trained.save(saved)
    out_path = tmp_path / f"{nprocs}_ranks.npz"
    result = mpirun(str(HERE / "scripts" / "nn_ranks.py"), nprocs, timeout=120, args=(str(saved), str(out_path)))
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))[7:])
    for mode in ("serial", "exact"):
        assert out[mode]["loss"] == pytest.approx(serial_loss, rel=1e-12), mode
        grad = {k: np.array(v) for k, v in out[mode]["grad"].items()}
        assert ref.max_relative_error(grad, serial_grad) < 1e-10, mode
    # each rank stores only its own layers (plus the end layers where the end states live)
    local = out["local_parameters"]
    assert sum(local) == out["num_parameters"] and max(local) < out["num_parameters"]
    # one-shot: same as on one rank (MGRIT's iterates do not depend on the distribution)
    one_rank = nn.ResNet(**config)
    history = nn.Trainer(
        one_rank,
        optimizer=nn.Adam(lr=0.05),
        progress=False,
        layer_parallel=dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True),
    ).fit(x, y, epochs=5)
    np.testing.assert_allclose(out["one_shot_loss"], history.loss, rtol=1e-12)
    if nprocs == 2:  # the step counts benchmarks/README and the guide quote
        assert out["cycle_step_calls"] == {"full": [1658, 1658], "lean": [640, 640]}
    # models move between rank counts
    assert out["loaded_loss"] == pytest.approx(trainer_for(trained).evaluate(x, y)[0], rel=1e-12)
    val = xb.datasets.make_peaks(60, 10, seed=4).x_val
    assert out["loaded_predict"] == trainer_for(trained).predict(val).tolist()
    back = nn.ResNet.load(out_path)
    for k, v in one_rank.parameters().items():
        np.testing.assert_allclose(back.parameters()[k], v, rtol=1e-10, atol=1e-12)


def test_python_app_init_adjoint_gives_the_initial_condition_gradient():
    class Decay(xb.App):
        """u' = -u, u(0) = p: dJ/dp needs the adjoint of the initial condition."""

        def __init__(self, p):
            super().__init__(shape=1)
            self.p, self.grad = p, np.zeros(1)

        def init(self, t, u):
            u[:] = self.p if t == 0.0 else 0.3

        def step(self, u, ustop, fstop, status):
            u *= 1.0 / (1.0 + (status.tstop - status.tstart))

        def objective(self, u, status):
            return float(u[0] ** 2)

        def objective_adjoint(self, u, u_bar, f_bar, status):
            u_bar[:] = 2 * u * f_bar

        def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
            u_bar *= 1.0 / (1.0 + (status.tstop - status.tstart))

        def reset_gradient(self):
            self.grad[:] = 0.0

        def init_adjoint(self, t, u_bar, status):
            self.grad += u_bar

    def solve(p, ml):
        app = Decay(p)
        s = xb.Solver(
            app, 0.0, 1.0, 8, max_levels=ml, adjoint=True, tstart_objective=1.0, abs_tol=1e-14, abs_tol_adjoint=1e-14
        )
        r = s.solve()
        return r.objective, float(np.squeeze(s.gradient())), r.calls["init_adjoint"]

    J, g, calls = solve(0.7, 1)
    exact = 2 * 0.7 * (1 / 1.125) ** 16  # J = (p a^8)^2, a = 1 / (1 + 1/8)
    assert g == pytest.approx(exact, rel=1e-13) and calls == 1
    J3, g3, calls3 = solve(0.7, 3)
    assert g3 == pytest.approx(exact, rel=1e-10) and calls3 > 1


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(width=0), ValueError, "width must be >= 1, got 0"),
        (dict(depth=2.5), TypeError, "depth must be an integer, got 2.5"),
        (dict(classes=1), ValueError, "classes must be >= 2, got 1"),
        (dict(T=-1.0), ValueError, "T must be finite and > 0, got -1.0"),
        (dict(activation="sigmoid"), ValueError, "activation must be one of .* got 'sigmoid'"),
        (dict(opening="conv"), ValueError, "opening must be 'dense' or 'zero_pad', got 'conv'"),
        (dict(opening="zero_pad", in_features=9), ValueError, "needs width >= in_features, got width=8, in_features=9"),
        (dict(bias="none"), ValueError, "bias must be 'channel' or 'scalar', got 'none'"),
        (dict(tikhonov=-1), ValueError, "tikhonov must be finite and >= 0, got -1"),
        (dict(smoothness=float("nan")), ValueError, "smoothness must be finite and >= 0, got nan"),
        (dict(seed=-3), ValueError, "seed must be a non-negative integer, got -3"),
    ],
)
def test_resnet_rejects_bad_arguments(kwargs, exc, match):
    args = dict(in_features=2, width=8, depth=4, classes=5) | kwargs
    with pytest.raises(exc, match=match):
        nn.ResNet(**args)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(layer_parallel=dict(max_levels=1)), ValueError, r"max_levels'\] must be >= 2 .* got 1"),
        (dict(layer_parallel=dict(cfactr=2)), TypeError, "unknown key.*'cfactr'"),
        (dict(layer_parallel=dict(one_shot="yes")), TypeError, r"one_shot'\] must be True or False, got 'yes'"),
        (dict(layer_parallel=dict(cfactor=1)), ValueError, r"layer_parallel\['cfactor'\] must be >= 2, got 1"),
        (dict(layer_parallel=[3]), TypeError, "layer_parallel must be a dict"),
        (dict(optimizer="adam"), TypeError, "optimizer must be a pyxbraid.nn optimizer"),
        (dict(comm=3), TypeError, "comm must be an mpi4py.MPI.Comm"),
        (dict(seed=-1), ValueError, "seed must be a non-negative integer, got -1"),
    ],
)
def test_trainer_rejects_bad_arguments(kwargs, exc, match):
    net = nn.ResNet(2, 4, 4, 5)
    with pytest.raises(exc, match=match):
        nn.Trainer(net, progress=False, **kwargs)  # checked when the trainer is built, not at the first fit


@pytest.mark.parametrize(
    "x, y, exc, match",
    [
        (np.zeros((5, 3)), np.zeros(5, int), ValueError, r"x must have shape \(n, 2\) with n >= 1, got \(5, 3\)"),
        (np.zeros((0, 2)), np.zeros(0, int), ValueError, r"got \(0, 2\)"),
        (
            np.array([[0.0, 1.0], [np.nan, 0.0]]),
            np.zeros(2, int),
            ValueError,
            r"x must be finite, got \[nan, 0.0\] in row 1",
        ),
        (np.array([["a", "b"]]), np.zeros(1, int), TypeError, "x must be a real array"),
        (np.zeros((3, 2)), np.array([0, 5, 1]), ValueError, "y must be in 0..4, got 5"),
        (np.zeros((3, 2)), np.array([0, -1, 1]), ValueError, "y must be in 0..4, got -1"),
        (np.zeros((3, 2)), np.array([0.5, 1, 1]), TypeError, "y must hold integer class labels"),
        (np.zeros((3, 2)), np.zeros(4, int), ValueError, r"y must have shape \(3,\) to match x, got \(4,\)"),
        (np.zeros((2, 2)), np.full((2, 5), 0.5), ValueError, "one-hot"),
    ],
)
def test_bad_data_is_named(x, y, exc, match):
    trainer = trainer_for(nn.ResNet(2, 4, 4, 5))
    with pytest.raises(exc, match=match):
        trainer.fit(x, y)


def test_one_hot_labels_are_accepted():
    x, y = small_data()
    trainer = trainer_for(nn.ResNet(2, 4, 4, 5))
    assert trainer.loss_and_gradient(x, np.eye(5)[y])[0] == trainer.loss_and_gradient(x, y)[0]


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda t, x, y: t.fit(x, y, epochs=0), ValueError, "epochs must be an integer >= 1, got 0"),
        (lambda t, x, y: t.fit(x, y, batch_size=0), ValueError, "batch_size must be a positive integer or None, got 0"),
        (lambda t, x, y: t.fit(x, y, validation=x), TypeError, "validation must be a pair"),
        (
            lambda t, x, y: t.fit(x, y, validation=(x, 0 * y + 7)),
            ValueError,
            "validation labels must be in 0..4, got 7",
        ),
        (lambda t, x, y: t.plot_decision_regions("r.png", np.zeros((2, 3)), [0, 1]), ValueError, "x must have shape"),
    ],
)
def test_bad_fit_arguments_are_named(call, exc, match):
    x, y = small_data()
    with pytest.raises(exc, match=match):
        call(trainer_for(nn.ResNet(2, 4, 4, 5)), x, y)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: nn.SGD(lr=0), ValueError, "lr must be > 0 and finite, got 0"),
        (lambda: nn.SGD(lr=0.1, momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
        (lambda: nn.Adam(lr=-1), ValueError, "lr must be > 0 and finite, got -1"),
        (lambda: nn.Adam(betas=(0.9,)), TypeError, "betas must be a pair"),
        (lambda: nn.LBFGS(history=0), ValueError, "history must be an integer in 1..1000000, got 0"),
        (lambda: nn.LBFGS(c1=0), ValueError, r"c1 must be in \(0, 1\), got 0"),
        (lambda: nn.LBFGS(lr="1"), TypeError, "lr must be a real number, got '1'"),
    ],
)
def test_optimizers_reject_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(ValueError, match="is not a valid pyxbraid.nn.ResNet file: no format tag"):
        nn.ResNet.load(bad)
    with pytest.raises(OSError):
        nn.ResNet.load(tmp_path / "missing.npz")


def test_set_parameters_checks_names_shapes_and_values():
    net = nn.ResNet(2, 3, 4, 2)
    P = net.parameters()
    with pytest.raises(KeyError, match="missing 'classifier.bias'"):
        net.set_parameters({k: v for k, v in P.items() if k != "classifier.bias"})
    with pytest.raises(ValueError, match=r"params\['layers.weight'\] must have shape \(4, 3, 3\), got \(3, 3, 3\)"):
        net.set_parameters(P | {"layers.weight": P["layers.weight"][:3]})
    with pytest.raises(ValueError, match="NaN"):
        net.set_parameters(P | {"opening.bias": np.full(3, np.nan)})


def test_plots_and_history_are_written(tmp_path):
    d = xb.datasets.make_peaks(100, 20, seed=1)
    trainer = trainer_for(nn.ResNet(2, 4, 4, 5))
    history = trainer.fit(d.x_train, d.y_train, epochs=2, batch_size=25, validation=(d.x_val, d.y_val))
    trainer.plot(history, tmp_path / "training.png")
    trainer.plot_decision_regions(tmp_path / "regions.png", d.x_train, d.y_train, resolution=30)
    assert (tmp_path / "training.png").stat().st_size > 1000 and (tmp_path / "regions.png").stat().st_size > 1000
    assert json.loads(json.dumps(history.as_dict()))["epoch"] == [1, 2]
    assert not math.isnan(history.val_accuracy[-1]) and math.isnan(history.residual[-1])


FAILURES_ON_ONE_RANK = """
import sys
import numpy as np
from mpi4py import MPI
import pyxbraid as xb
from pyxbraid import nn
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
d = xb.datasets.make_peaks(60, 10, seed=1)
net = nn.ResNet(2, 4, 8, 5)
case = sys.argv[1]
try:
    if case == "nan":          # bad data on one rank only
        x = d.x_train.copy()
        if rank == 2:
            x[3, 0] = np.nan
        nn.Trainer(net, comm=comm, progress=False).fit(x, d.y_train, epochs=1)
    else:                      # a non-finite weight on one rank makes its native step fail
        trainer = nn.Trainer(net, comm=comm, progress=False, layer_parallel=dict(max_levels=2, cfactor=2))
        if rank == 1:
            net.local_parameters[3] = np.inf
        trainer.fit(d.x_train, d.y_train, epochs=1)
    report = "no error"
except Exception as e:
    report = f"{type(e).__name__}: {e}"
reports = comm.gather(report)   # every rank got here: nothing hangs
if rank == 0:
    import json
    print("RESULT " + json.dumps(reports), flush=True)
"""


@pytest.mark.parametrize(
    "case, culprit, own, expected",
    [
        (
            "nan",
            2,
            "ValueError: x must be finite, got [nan,",
            "rejected its fit() arguments: ValueError: x must be finite",
        ),
        ("inf", 1, "CallbackError: rank 1: ResNet.step", "RemoteRankError: rank 1: ResNet.step"),
    ],
)
def test_failure_on_one_rank_raises_on_every_rank(mpirun, case, culprit, own, expected):
    out = mpirun(FAILURES_ON_ONE_RANK, 3, timeout=60, args=(case,)).stdout
    lines = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    assert len(lines) == 3
    assert own in lines[culprit]
    for rank in {0, 1, 2} - {culprit}:
        assert "RemoteRankError" in lines[rank] and expected in lines[rank] and f"rank {culprit}" in lines[rank]
