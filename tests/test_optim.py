"""Optimizers and learning-rate schedules: updates worked out by hand, updates
against PyTorch's documented algorithms on random arrays, L2 weight decay
(``l2``), hyperparameter validation and the flushing of subnormal optimizer
state (``nn.speed.flush_subnormals``)."""

import numpy as np
import pytest

import nn
from nn import speed
from nn.layers import Parameter
from nn.optim import SGD, Adam, lr_at_epoch, make_optimizer


def scalar(value=0.0):
    return Parameter(np.array([value], dtype=np.float64), "w")


def run(opt, param, grads):
    """Apply one step per gradient; return the parameter's value after each step."""
    values = []
    for g in grads:
        param.grad[...] = g
        opt.step()
        values.append(float(param.value[0]))
    return values


# -- by hand --------------------------------------------------------------------------

def test_sgd_single_step_by_hand():
    p = Parameter(np.array([1.0, -2.0]), "w")
    p.grad[...] = [0.5, 0.25]
    SGD([p], lr=0.1).step()
    # w - lr g = [1 - 0.1*0.5, -2 - 0.1*0.25] = [0.95, -2.025]
    np.testing.assert_allclose(p.value, [0.95, -2.025], rtol=1e-15)


def test_sgd_momentum_by_hand():
    p = scalar()
    # g = 1 every step, lr 0.1, momentum 0.9 (v starts at 0):
    # step 1: v = 0.9*0 + 1 = 1,          w = 0     - 0.1*1    = -0.1
    # step 2: v = 0.9*1 + 1 = 1.9,        w = -0.1  - 0.1*1.9  = -0.29
    # step 3: v = 0.9*1.9 + 1 = 2.71,     w = -0.29 - 0.1*2.71 = -0.561
    values = run(SGD([p], lr=0.1, momentum=0.9), p, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(values, [-0.1, -0.29, -0.561], rtol=1e-14)


def test_sgd_nesterov_by_hand():
    p = scalar()
    # Same v as above, but the step uses g + momentum * v (a look-ahead):
    # step 1: v = 1,    w = 0      - 0.1*(1 + 0.9*1)    = -0.19
    # step 2: v = 1.9,  w = -0.19  - 0.1*(1 + 0.9*1.9)  = -0.19 - 0.271  = -0.461
    # step 3: v = 2.71, w = -0.461 - 0.1*(1 + 0.9*2.71) = -0.461 - 0.3439 = -0.8049
    values = run(SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(values, [-0.19, -0.461, -0.8049], rtol=1e-14)


def test_adam_constant_gradient_moves_lr_per_step():
    p = scalar()
    # With a constant g the bias corrections make m_hat = g and v_hat = g^2 exactly:
    # m_t = g (1 - b1^t), v_t = g^2 (1 - b2^t). So each step is lr * g / (|g| + eps):
    # with g = 2, lr = 0.1: 0.1 * 2 / (2 + 1e-8) = 0.0999999995 per step.
    step = 0.1 * 2 / (2 + 1e-8)
    values = run(Adam([p], lr=0.1), p, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(values, [-step, -2 * step, -3 * step], rtol=1e-12)


def test_adam_two_steps_by_hand():
    p = scalar()
    # lr 0.1, betas (0.9, 0.999), eps 1e-8; g1 = 1, g2 = -1.
    # step 1: m = 0.1, v = 0.001; m_hat = 0.1/0.1 = 1, v_hat = 0.001/0.001 = 1
    #         w = 0 - 0.1 * 1 / (1 + 1e-8) = -0.0999999999
    # step 2: m = 0.9*0.1 - 0.1 = -0.01; v = 0.999*0.001 + 0.001 = 0.001999
    #         m_hat = -0.01 / (1 - 0.81) = -0.05263157894736842
    #         v_hat = 0.001999 / (1 - 0.998001) = 1
    #         w = w + 0.1 * 0.05263157894736842 / (1 + 1e-8)
    w1 = -0.1 / (1 + 1e-8)
    w2 = w1 + 0.1 * (0.01 / 0.19) / (1 + 1e-8)
    values = run(Adam([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8), p, [1.0, -1.0])
    np.testing.assert_allclose(values, [w1, w2], rtol=1e-12)
    assert w2 == pytest.approx(-0.09473684210526316, abs=1e-8)


# -- against PyTorch's algorithms on random arrays -------------------------------------------

def torch_sgd(params, grads_per_step, lr, momentum, nesterov, wd, decays):
    """torch.optim.SGD (dampening 0) as documented, in float64."""
    params = [p.astype(np.float64).copy() for p in params]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(params, grads)):
            g = g.astype(np.float64)
            if wd and decays[i]:
                g = g + wd * w
            if momentum:
                bufs[i] = g.copy() if bufs[i] is None else momentum * bufs[i] + g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            w -= lr * g
    return params


def torch_adam(params, grads_per_step, lr, betas, eps, wd, decays):
    """torch.optim.Adam (not AdamW: decay is added to the gradient), in float64."""
    b1, b2 = betas
    params = [p.astype(np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (w, g) in enumerate(zip(params, grads)):
            g = g.astype(np.float64)
            if wd and decays[i]:
                g = g + wd * w
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            w -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def random_problem(dtype, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    W = Parameter(rng.standard_normal((4, 3)).astype(dtype), "W")
    b = Parameter(rng.standard_normal(3).astype(dtype), "b", decay=False)
    grads = [[rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)]
             for _ in range(steps)]
    return [W, b], grads


def apply(opt, params, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad[...] = g  # the optimizer may modify .grad: always hand it a copy
        opt.step()


SGD_CASES = [dict(momentum=0.0, nesterov=False), dict(momentum=0.9, nesterov=False),
             dict(momentum=0.8, nesterov=True)]


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("case", SGD_CASES, ids=["plain", "momentum", "nesterov"])
def test_sgd_matches_pytorch_semantics(case, wd, dtype, rtol):
    params, grads = random_problem(dtype)
    initial = [p.value.copy() for p in params]
    expected = torch_sgd(initial, grads, lr=0.05, wd=wd, decays=[True, False], **case)
    apply(SGD(params, lr=0.05, l2=wd, **case), params, grads)
    for p, e in zip(params, expected):
        assert p.value.dtype == dtype
        np.testing.assert_allclose(p.value, e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_matches_pytorch_semantics(betas, wd, dtype, rtol):
    params, grads = random_problem(dtype, seed=1)
    initial = [p.value.copy() for p in params]
    expected = torch_adam(initial, grads, lr=0.01, betas=betas, eps=1e-8, wd=wd,
                          decays=[True, False])
    apply(Adam(params, lr=0.01, betas=betas, eps=1e-8, l2=wd), params, grads)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.value, e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_weight_decay_shrinks_weights_not_biases(name):
    rng = np.random.default_rng(2)
    W = Parameter(rng.standard_normal((3, 2)), "W")
    b = Parameter(rng.standard_normal(2), "b", decay=False)
    W0, b0 = W.value.copy(), b.value.copy()
    opt = make_optimizer(name, [W, b], lr=0.1, l2=0.5)
    opt.step()  # zero gradients: only the decay term moves anything
    np.testing.assert_array_equal(b.value, b0)
    if name == "adam":  # a first Adam step moves every decayed weight by lr toward 0
        np.testing.assert_allclose(W.value, W0 - 0.1 * np.sign(W0), rtol=1e-6)
    else:  # w - lr * wd * w = w * (1 - 0.1 * 0.5)
        np.testing.assert_allclose(W.value, W0 * 0.95, rtol=1e-14)


def test_network_marks_weights_for_decay_and_biases_not():
    model = nn.Network(nn.mlp_spec((8, 4), dropout=0.2))
    assert [(p.name, p.decay) for p in model.parameters()] == [
        ("weight", True), ("bias", False)] * 3
    cnn = nn.Network(nn.cnn_spec((2,), kernel=3, hidden=(4,)))  # filters decay too
    assert [(p.name, p.decay) for p in cnn.parameters()] == [
        ("weight", True), ("bias", False)] * 3


def test_old_weight_decay_name_is_gone():
    """``weight_decay`` became ``l2`` everywhere: the old keyword is refused, not ignored."""
    for build in (lambda: SGD(params(), lr=0.1, weight_decay=1e-4),
                  lambda: Adam(params(), weight_decay=1e-4),
                  lambda: make_optimizer("adam", params(), lr=0.1, weight_decay=1e-4)):
        with pytest.raises(TypeError, match="weight_decay"):
            build()


def test_make_optimizer_builds_what_the_name_says():
    params = nn.Network(nn.mlp_spec((4,))).parameters()
    sgd = make_optimizer("sgd", params, lr=0.1, momentum=0.9)
    assert isinstance(sgd, SGD) and sgd.momentum == 0  # plain SGD ignores momentum
    mom = make_optimizer("momentum", params, lr=0.1, momentum=0.8, nesterov=True)
    assert isinstance(mom, SGD) and mom.momentum == 0.8 and mom.nesterov
    adam = make_optimizer("adam", params, lr=0.002, l2=1e-4)
    assert isinstance(adam, Adam) and (adam.beta1, adam.beta2) == (0.9, 0.999)
    assert adam.hyperparams()["l2"] == 1e-4 and adam.hyperparams()["lr"] == 0.002
    assert mom.hyperparams() == {"optimizer": "momentum", "lr": 0.1, "momentum": 0.8,
                                 "nesterov": True, "l2": 0.0}


def test_zero_grad():
    p = Parameter(np.ones(3), "w")
    p.grad[...] = 5
    SGD([p], lr=0.1).zero_grad()
    assert not p.grad.any()


# -- schedules ---------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["none", None])
def test_no_schedule_is_constant(schedule):
    assert [lr_at_epoch(schedule, 0.1, e, 10) for e in range(10)] == [0.1] * 10


def test_step_schedule():
    # default step size: a third of the run (9 // 3 = 3 epochs); gamma 0.5
    got = [lr_at_epoch("step", 0.1, e, 9) for e in range(9)]
    np.testing.assert_allclose(got, [0.1] * 3 + [0.05] * 3 + [0.025] * 3, rtol=1e-15)
    got = [lr_at_epoch("step", 1.0, e, 5, step_size=2, gamma=0.1) for e in range(5)]
    np.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.01], rtol=1e-15)
    assert lr_at_epoch("step", 0.1, 1, 2) == 0.05  # 2 // 3 = 0 -> step size 1


def test_cosine_schedule_endpoints_and_shape():
    lrs = [lr_at_epoch("cosine", 0.1, e, 11) for e in range(11)]
    assert lrs[0] == pytest.approx(0.1, rel=1e-15)               # starts at the base rate
    assert lrs[-1] == pytest.approx(0.1 * 0.01, rel=1e-12)       # ends at min_factor * base
    assert lrs[5] == pytest.approx(0.1 * (0.01 + 0.99 * 0.5), rel=1e-12)  # halfway: cos = 0
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lr_at_epoch("cosine", 0.1, 0, 1) == 0.1  # a one-epoch run keeps the base rate


# -- invalid hyperparameters ------------------------------------------------------------------

def params():
    return [Parameter(np.zeros(2), "w")]


BAD = [
    ("lr", lambda: SGD(params(), lr=0)),
    ("lr", lambda: SGD(params(), lr=-0.1)),
    ("lr", lambda: SGD(params(), lr=float("nan"))),
    ("lr", lambda: SGD(params(), lr=float("inf"))),
    ("lr", lambda: Adam(params(), lr=10.5)),
    ("lr", lambda: Adam(params(), lr="fast")),
    ("lr", lambda: make_optimizer("momentum", params(), lr=0)),
    ("momentum", lambda: SGD(params(), lr=0.1, momentum=1.0)),
    ("momentum", lambda: SGD(params(), lr=0.1, momentum=-0.1)),
    ("momentum", lambda: SGD(params(), lr=0.1, momentum=float("nan"))),
    ("momentum", lambda: make_optimizer("momentum", params(), lr=0.1, momentum=1.0)),
    ("momentum", lambda: make_optimizer("momentum", params(), lr=0.1, momentum=0.0)),
    ("momentum", lambda: make_optimizer("momentum", params(), lr=0.1, momentum=-0.1)),
    ("beta1", lambda: Adam(params(), betas=(1.0, 0.999))),
    ("beta1", lambda: Adam(params(), betas=(-0.1, 0.999))),
    ("beta2", lambda: Adam(params(), betas=(0.9, 1.0))),
    ("beta2", lambda: Adam(params(), betas=(0.9, float("nan")))),
    ("eps", lambda: Adam(params(), eps=0)),
    ("l2", lambda: SGD(params(), lr=0.1, l2=-1e-4)),
    ("l2", lambda: Adam(params(), l2=float("nan"))),
    ("l2", lambda: make_optimizer("sgd", params(), lr=0.1, l2=2.0)),
    ("nesterov", lambda: SGD(params(), lr=0.1, nesterov=True)),
    ("nesterov", lambda: make_optimizer("sgd", params(), lr=0.1, nesterov=True)),
    ("optimizer", lambda: make_optimizer("rmsprop", params(), lr=0.1)),
    ("optimizer", lambda: make_optimizer("SGD", params(), lr=0.1)),
    ("schedule", lambda: lr_at_epoch("linear", 0.1, 0, 5)),
    ("parameter list", lambda: SGD([], lr=0.1)),
]


@pytest.mark.parametrize("name,build", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_invalid_hyperparameter_raises_naming_it(name, build):
    with pytest.raises(ValueError, match=rf"(?<![a-z_]){name}(?![a-z_])"):
        build()


# -- subnormal flushing ---------------------------------------------------------------------

def subnormal_count(a):
    a = np.abs(a)
    return int(np.count_nonzero((a > 0) & (a < np.finfo(np.float32).tiny)))


def momentum_after_idle_steps(monkeypatch, flush=True):
    steps = speed.FLUSH_EVERY
    if not flush:
        monkeypatch.setattr(speed, "FLUSH_EVERY", 10**9)
    # One real gradient spanning many magnitudes (all normal float32 numbers), then
    # FLUSH_EVERY - 1 steps without gradient: the velocity decays by 0.9 per step,
    # i.e. by 0.9**99 ~ 3e-5, pushing the small entries below 1.2e-38 (subnormal).
    g = np.float32(10.0) ** -np.arange(0, 37, dtype=np.float32)
    p = Parameter(np.zeros_like(g), "w")
    opt = SGD([p], lr=1e-3, momentum=0.9)
    p.grad[...] = g
    opt.step()
    for _ in range(steps - 1):
        p.grad[...] = 0
        opt.step()
    return opt.state[0]["velocity"], g


def test_momentum_state_is_flushed_of_subnormals(monkeypatch):
    v, g = momentum_after_idle_steps(monkeypatch)
    assert v.dtype == np.float32
    assert subnormal_count(v) == 0
    assert np.abs(v)[v != 0].min() >= np.finfo(np.float32).tiny
    # what could still move a weight is kept exactly as the decay left it
    decay = np.float32(0.9) ** (speed.FLUSH_EVERY - 1)
    big = g * decay >= speed.FLUSH_BELOW * 10
    assert big.sum() >= 20
    np.testing.assert_allclose(v[big], g[big] * decay, rtol=1e-4)


def test_without_flushing_the_momentum_would_go_subnormal(monkeypatch):
    v, _ = momentum_after_idle_steps(monkeypatch, flush=False)  # the same run, never flushed
    assert subnormal_count(v) > 0


def test_the_speed_switch_turns_flushing_off(monkeypatch):
    """``nn.speed.ENABLED["flush_subnormals"] = False`` (the ablation benchmark's switch)
    is the same run, never flushed."""
    monkeypatch.setitem(speed.ENABLED, "flush_subnormals", False)
    v, _ = momentum_after_idle_steps(monkeypatch)
    assert subnormal_count(v) > 0


def test_flush_subnormals_only_on_every_flush_step():
    a = np.array([1e-35, -1e-31, 1e-29, 0.5, 0.0], np.float32)
    speed.flush_subnormals([a], speed.FLUSH_EVERY + 1)   # not a flush step: unchanged
    assert a[0] != 0 and a[1] != 0
    speed.flush_subnormals([a], 2 * speed.FLUSH_EVERY)
    np.testing.assert_array_equal(a, np.array([0, 0, 1e-29, 0.5, 0], np.float32))


def test_adam_state_is_flushed_too(monkeypatch):
    monkeypatch.setattr(speed, "FLUSH_EVERY", 50)
    p = Parameter(np.float32(10.0) ** -np.arange(20, 37, dtype=np.float32), "w")
    opt = Adam([p], lr=1e-3, betas=(0.5, 0.999))
    p.grad[...] = p.value
    opt.step()
    for _ in range(49):
        p.grad[...] = 0
        opt.step()
    for key in ("m", "v"):
        assert subnormal_count(opt.state[0][key]) == 0, key
    assert not opt.state[0]["m"].any()  # 0.5**49 * 1e-20 < 1e-30: all flushed


# -- keeping freed memory (nn.speed.keep_freed_memory) -------------------------------------------

FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from nn import speed
if sys.argv[1] == "on":                         # else glibc as it comes, untouched
    print("applied" if speed.keep_freed_memory() else "not applied")
else:
    print("untouched")
size = 2**20                                    # 4 MB of float32
np.ones(size, np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):                             # a training step's arrays: made, used, freed
    a = np.ones(size, np.float32)
    b = np.ones(size, np.float32)
    del a
    c = np.ones(size // 2, np.float32)
    del b, c
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    applied, faults = out.stdout.split("\n")[:2]
    return applied, int(faults)


def test_freed_memory_is_reused_not_faulted_in_again():
    """The cause of the speed-up, counted (not timed): with the trick, 40 rounds of a
    training step's 4 MB arrays take almost no fresh pages; with glibc as it comes
    (its adaptive thresholds) they took about 77,000 page faults here."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    applied, kept = page_faults("on")
    if applied != "applied":
        pytest.skip("this glibc refused the thresholds")
    _, fresh = page_faults("untouched")
    assert kept < 2_000 and fresh > 5 * max(kept, 1_000), (kept, fresh)


def test_switched_off_it_leaves_glibc_alone(monkeypatch):
    """Off before anything set it: no mallopt call at all (glibc keeps its adaptive
    thresholds); off after on: glibc's static initial values, the closest there is."""
    calls = []
    monkeypatch.setitem(speed._malloc, "mallopt", lambda param, value: calls.append(param) or 1)
    monkeypatch.setitem(speed._malloc, "set", None)
    monkeypatch.setitem(speed.ENABLED, "keep_freed_memory", False)
    assert speed.keep_freed_memory() is False and calls == []
    monkeypatch.setitem(speed.ENABLED, "keep_freed_memory", True)
    assert speed.keep_freed_memory() is True and sorted(calls) == [-3, -1]
    assert speed.keep_freed_memory() is True and len(calls) == 2      # once is enough
    monkeypatch.setitem(speed.ENABLED, "keep_freed_memory", False)
    assert speed.keep_freed_memory() is False and len(calls) == 4


def test_an_older_glibc_gets_the_largest_threshold_it_accepts(monkeypatch):
    calls = []

    def old_glibc(param, value):
        calls.append((param, value))
        return 0 if param == -3 and value > 32 * 2**20 else 1

    monkeypatch.setitem(speed._malloc, "mallopt", old_glibc)
    monkeypatch.setitem(speed._malloc, "set", None)
    monkeypatch.setitem(speed.ENABLED, "keep_freed_memory", True)
    assert speed.keep_freed_memory() is True
    assert (-3, 32 * 2**20) in calls and (-1, 2 * speed.KEEP_MEMORY_BYTES) in calls
