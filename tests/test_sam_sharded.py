"""Data parallel: the batch sharded over 8 devices gives the single-device gradient."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from looksam import sam

CASES = [("sam", dict(rho=0.3), True), ("looksam", dict(rho=0.3, k=2), True),
         ("looksam", dict(rho=0.3, k=2), False), ("layersam", dict(rho=0.3), True),
         ("esam", dict(rho=0.3, beta=0.5, gamma=0.5), True),
         ("esam", dict(rho=0.3, beta=0.5, gamma=0.5, m=4), True),
         ("sam", dict(rho=0.3, m=2, microbatch=8), True),
         # m-groups vmapped as on an accelerator, told the batch's sharding: each device its own
         # groups (shard_map) where m divides its 2 examples, else one group after the other
         ("sam", dict(rho=0.3, m=2, group_map="vmap"), True),
         ("looksam", dict(rho=0.3, k=2, m=2, group_map="vmap"), True),
         ("looksam", dict(rho=0.3, k=2, m=2, group_map="vmap"), False),
         ("esam", dict(rho=0.3, beta=0.5, gamma=0.5, m=2, group_map="vmap"), True),
         ("sam", dict(rho=0.3, m=4, group_map="vmap"), True)]


def float64(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64) if x.dtype == np.float32 else x, tree)


@pytest.mark.parametrize("method,hp,sam_step", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_sharded_batch_equals_one_device(problem, method, hp, sam_step):
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    # In float64: what is compared is the partitioning, not float32 rounding, which BatchNorm over
    # ESAM's 8-example subsets amplifies past 1e-3 relative on some CPUs (gradients ~13).
    with jax.enable_x64(True):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        est = sam.make(method, **hp)
        params, batch = float64(problem.params), float64(problem.batch(n=16))
        _, state, _ = est.gradient(problem.loss_fn, params, float64(problem.batch(5, n=16)),
                                   est.init(params), jax.random.key(0), sam_step=True)
        fn = jax.jit(lambda p, b, s, r: est.gradient(problem.loss_fn, p, b, s, r, sam_step=sam_step))
        key = jax.random.key(1)
        want = fn(params, batch, state, key)
        replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        if hp.get("group_map") == "vmap":
            est = dataclasses.replace(est, batch_sharding=sharded)
            fn = jax.jit(lambda p, b, s, r: est.gradient(problem.loss_fn, p, b, s, r, sam_step=sam_step))
        got = fn(jax.device_put(params, replicated), jax.device_put(batch, sharded),
                 jax.device_put(state, replicated), key)
        assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(got[0]))  # grads replicated
        # the gradient, the estimator's state, and the forward's aux (BatchNorm statistics)
        flat_got, flat_want = (ravel_pytree((r[:2], r[2].aux))[0] for r in (got, want))
    assert flat_want.dtype == np.float64
    np.testing.assert_allclose(flat_got, flat_want, 1e-9, 1e-10)


def test_esam_subset_stays_sharded_so_its_cost_falls():
    """SDS gathers the selected examples; without `batch_sharding` XLA replicates that gather and
    every device computes the whole subset (per-device FLOPs of a SAM step or more)."""
    import jax.numpy as jnp
    import optax
    from test_sam_cost import ConvNet

    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    model = ConvNet()
    params = jax.device_put(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"],
                            replicated)
    batch = jax.device_put({"x": jnp.ones((64, 16, 16, 3)), "y": jnp.zeros((64,), jnp.int32)},
                           sharded)

    def loss_fn(p, b):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, b["x"]),
                                                               b["y"]), ()

    def flops(est, sam_step):
        fn = jax.jit(lambda p, b, s, r: est.gradient(loss_fn, p, b, s, r, sam_step=sam_step))
        cost = fn.lower(params, batch, est.init(params), jax.random.key(0)).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    base = flops(sam.make("none"), False)
    kept = flops(sam.make("esam", beta=0.6, gamma=0.5, batch_sharding=sharded), True) / base
    lost = flops(sam.make("esam", beta=0.6, gamma=0.5), True) / base
    assert 1.6 < kept < 1.95  # 1 + 1/3 + gamma, per device
    assert lost > kept + 0.3


def test_m_equal_to_the_per_device_batch_is_the_per_device_perturbation_of_the_tpu_code(mlp):
    """The original SAM/LookSAM TPU code: every device perturbs with its own gradient of its own
    examples, computes the gradient there, and the devices average (pmean). Written here with
    shard_map and lax.pmean, it must equal the estimator with m = n / devices."""
    from jax.sharding import Mesh

    rho, n, devices = 0.3, 16, 8
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    batch = mlp.batch(n=n)

    def mean_loss(p, b):
        return mlp.loss_fn(p, b)[0].mean()

    def per_device(params, local):
        g = jax.grad(mean_loss)(params, local)
        norm = jax.numpy.sqrt(sum((x ** 2).sum() for x in jax.tree.leaves(g)))
        perturbed = jax.tree.map(lambda w, gi: w + rho * gi / norm, params, g)
        return jax.lax.pmean(jax.grad(mean_loss)(perturbed, local), "data")

    # check_vma=False: per-device gradients as under pmap (with it, JAX would psum the gradient
    # of the replicated parameters over devices inside `per_device`).
    tpu_style = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")),
                                      out_specs=P(), check_vma=False))
    want = tpu_style(mlp.params, batch)
    est = sam.make("sam", rho=rho, m=n // devices)
    got, _, _ = est.gradient(mlp.loss_fn, mlp.params, batch, est.init(mlp.params), sam_step=True)
    np.testing.assert_allclose(ravel_pytree(got)[0], ravel_pytree(want)[0], rtol=1e-5, atol=1e-6)
    plain = sam.make("sam", rho=rho).gradient(mlp.loss_fn, mlp.params, batch,
                                               sam.make("sam").init(mlp.params), sam_step=True)[0]
    assert not np.allclose(ravel_pytree(plain)[0], ravel_pytree(want)[0], rtol=1e-3)  # m matters
