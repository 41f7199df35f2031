"""Sharding the env axis across devices (`PPOConfig(num_devices=D)`), with `jax.sharding`.

The training program stays one jit-compiled function; XLA's SPMD partitioner splits it. The
trainer pins the env axis of the actors (env states, observations, carries) and of every
batch and minibatch to the mesh axis "env" with sharding constraints; parameters, optimizer
state and normalizer statistics stay replicated. Each device then steps its own
num_envs / D environments, and every reduction over the env axis (the loss means, hence the
gradients; normalizer and advantage statistics; episode summaries) becomes an all-reduce
across devices. Minibatches are drawn so that an epoch's shuffle never moves data between
devices: each device shuffles its own envs' transitions and gives every minibatch an equal
share (`update._minibatches`). That draw depends only on `num_devices`, not on where the
program runs, so a config with `num_devices=8` gives the same run (within float tolerance:
the all-reduces sum in another order) on one device as on eight.

Multi-host: after `jax.distributed.initialize(...)` in every process, `jax.devices()` lists
the devices of all processes; `num_devices` counts global devices and the mesh spans them.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "env"


@functools.cache
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.array(devices), (AXIS,))


def env_mesh(num_devices: int) -> Mesh | None:
    """The 1-D mesh ("env",) of the first `num_devices` of `jax.devices()`; None for 1.

    Raises ValueError when fewer devices exist (on CPU, more host devices come from
    `XLA_FLAGS=--xla_force_host_platform_device_count=N`, set before jax starts).
    """
    if num_devices == 1:
        return None
    devices = jax.devices()
    if len(devices) < num_devices:
        raise ValueError(
            f"PPOConfig.num_devices={num_devices} is invalid here: jax sees "
            f"{len(devices)} device(s) ({devices[0].platform}); on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before jax starts, "
            "across hosts call jax.distributed.initialize() first"
        )
    return _mesh(tuple(devices[:num_devices]))


def env_sharding(mesh: Mesh, axis: int, ndim: int) -> NamedSharding:
    """The sharding of an array of rank `ndim` whose env axis is `axis`."""
    spec = [None] * ndim
    spec[axis] = AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def constrain(tree, mesh: Mesh | None, axis: int):
    """Pin axis `axis` of every leaf of rank > `axis` to the mesh's "env" axis.

    Leaves of lower rank (scalar summaries) are left to the partitioner (replicated). With
    no mesh this is the identity, so the single-device program has no constraint at all.
    """
    if mesh is None:
        return tree

    def pin(x):
        if not hasattr(x, "ndim") or x.ndim <= axis:
            return x
        return jax.lax.with_sharding_constraint(x, env_sharding(mesh, axis, x.ndim))

    return jax.tree.map(pin, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def seed_mesh(num_devices: int) -> Mesh:
    """The 1-D mesh ("seed",) of the first `num_devices` devices: independent runs side by
    side, one slice of the seed (or population) axis per device, no traffic between them."""
    devices = env_mesh(num_devices).devices.ravel()
    return Mesh(devices, ("seed",))


def leading(mesh: Mesh) -> NamedSharding:
    """The sharding of arrays whose leading axis is split over the mesh's only axis."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def global_inputs(mesh: Mesh | None, *trees):
    """The arguments of a program over `mesh`, as arrays every process can pass in.

    In one process this is the identity. Across processes (after `jax.distributed`) a jitted
    program whose devices span processes takes only global arrays: each process holds the
    same values (a key, the config's hyperparameters), which become replicated global
    arrays. PRNG keys travel as their raw key data (`jppo.compile.as_key` re-wraps them).
    """
    if mesh is None or jax.process_count() == 1:
        return trees
    target = replicated(mesh)

    def to_global(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return tuple(jax.tree.map(to_global, t) for t in trees)


def local_value(x):
    """A replicated (or fully addressable) array's value as numpy, in any process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))
