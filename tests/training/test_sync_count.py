"""Host round trips in the training loop: at most one device->host transfer per logged step.

On a GPU every transfer of a value to the host (``float(loss)``, ``.item()``, ``to_numpy``) waits for the
device. The torch backend stands in for a device here: every way a tensor's value can reach Python is
counted while ``fit`` runs, so a hidden sync in any layer, loss or optimizer shows up on a CPU-only machine.
"""

import numpy as np
import pytest

import portacnn as pc

torch = pytest.importorskip("torch")

CONVERSIONS = ("__float__", "__int__", "__bool__", "__index__", "item", "tolist", "numpy")


@pytest.fixture
def count_host_reads(monkeypatch):
    counts = {"n": 0}
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, **k):
            counts["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("make", [pc.models.seed_cnn, pc.models.kannada_cnn], ids=["seed_cnn", "kannada_cnn"])
def test_training_steps_read_the_device_once_per_logged_step(count_host_reads, make):
    x, y = _data()
    model = make(backend="torch", seed=0)
    batch, log_every, epochs = 8, 4, 2
    steps_per_epoch = len(y) // batch
    count_host_reads["n"] = 0
    model.fit(x, y, epochs=epochs, batch_size=batch, log_every=log_every, progress=False)
    logged_per_epoch = -(-steps_per_epoch // log_every)  # every log_every steps, the last one at epoch end
    assert count_host_reads["n"] <= epochs * logged_per_epoch
    assert count_host_reads["n"] >= epochs  # the counter does see the epoch-end read


def test_one_step_without_logging_never_reads_the_device(count_host_reads):
    x, y = _data(16)
    model = pc.models.lenet5(backend="torch", seed=0)
    opt = pc.optim.Adam(model.parameters())
    yb = model.backend.asarray(y)
    count_host_reads["n"] = 0
    for _ in range(3):
        logits = model.forward(x, training=True)
        loss, dlogits = pc.losses.softmax_cross_entropy(logits, yb, check=False)
        model.backward(dlogits)
        opt.step()
        opt.zero_grad()
    assert count_host_reads["n"] == 0


def test_validation_and_evaluate_read_once(count_host_reads):
    x, y = _data(64)
    model = pc.models.seed_cnn(backend="torch", seed=0)
    count_host_reads["n"] = 0
    model.evaluate(x, y, batch_size=16)
    assert count_host_reads["n"] == 1
