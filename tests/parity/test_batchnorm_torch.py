"""BatchNorm against torch.nn.BatchNorm1d/2d: outputs, gradients and running statistics over steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fnn.layers.norm import BatchNorm  # noqa: E402


@pytest.mark.parametrize("momentum, eps", [(0.9, 1e-5), (0.7, 1e-3)])
def test_batchnorm2d_train_steps_and_eval(momentum, eps, key):
    """Our axis=1 on NCHW input is torch's layout; torch's momentum is 1 − ours."""
    c = 3
    ref = torch.nn.BatchNorm2d(c, momentum=1 - momentum, eps=eps).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64))
        ref.bias.copy_(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64))
    layer = BatchNorm(momentum=momentum, eps=eps, axis=1)
    _, _, state = layer.init(key, (c, 4, 5))
    params = {"scale": jnp.array([1.5, -0.5, 2.0], jnp.float64),
              "bias": jnp.array([0.1, 0.2, -0.3], jnp.float64)}
    step = jax.jit(lambda params, state, x, dy: (layer.apply(params, state, x, train=True),
                                                 layer.backward(params, state, x, dy, train=True)))
    for k in jax.random.split(key, 4):
        x = jax.random.normal(k, (5, c, 4, 5), jnp.float64) * 2 + 1
        dy = jax.random.normal(jax.random.fold_in(k, 1), x.shape, jnp.float64)
        (y, state), (dparams, dx) = step(params, state, x, dy)
        ref.train()
        ref.zero_grad()
        xt = torch.tensor(np.asarray(x), requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.tensor(np.asarray(dy)))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dparams["scale"], ref.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(dparams["bias"], ref.bias.grad.numpy(), rtol=1e-10)
        # float32 running statistics (ours) against torch's float64 ones
        np.testing.assert_allclose(state["mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["var"], ref.running_var.numpy(), rtol=1e-5)
    assert state["mean"].dtype == jnp.float32
    ref.eval()
    x = jax.random.normal(jax.random.key(7), (2, c, 4, 5), jnp.float64)
    y_eval, _ = layer.apply(params, state, x, train=False)
    y_ref = ref(torch.tensor(np.asarray(x))).detach().numpy()
    np.testing.assert_allclose(y_eval, y_ref, rtol=1e-5, atol=1e-6)


def test_batchnorm1d_channels_last_and_biased_running_var(key):
    ref = torch.nn.BatchNorm1d(4, momentum=0.1).double()
    layer = BatchNorm()
    _, params, state = layer.init(key, (4,))
    x = jax.random.normal(key, (6, 4), jnp.float64)
    y, state = layer.apply(params, state, x, train=True)
    np.testing.assert_allclose(y, ref(torch.tensor(np.asarray(x))).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state["var"], ref.running_var.numpy(), rtol=1e-6)
    # "biased": the batch variance enters the running average as it is (n − 1 → n)
    _, _, s0 = layer.init(key, (4,))
    _, biased = BatchNorm(running_var="biased").apply(params, s0, x, train=True)
    np.testing.assert_allclose(biased["var"], 0.9 + 0.1 * np.asarray(x).var(0), rtol=1e-6)
    assert not np.allclose(biased["var"], state["var"])
