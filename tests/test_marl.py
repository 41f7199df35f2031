"""The multi-agent trainer: per-agent isolation, divergence, shared parameters, roles, MAPPO.

RoleSplit (jppo.envs.roles) is the small cooperative task: both agents see the same cue and
must answer differently, so a shared network without an agent id earns at most 0.5 per step
(team return 8 of 16 over an 8-step episode) and independent networks can earn 1 (16).
"""

import csv
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jaxmarl")

import jppo  # noqa: E402
from jppo import marl, schedules  # noqa: E402
from jppo.envs.roles import RoleSplit  # noqa: E402
from jppo.types import Transition  # noqa: E402
from tests.helpers import interrupt_cli, qr_operand_shapes, run_cli  # noqa: E402

ROLES = jppo.PPOConfig(
    env=RoleSplit(),
    num_envs=16,
    num_steps=32,
    total_timesteps=16 * 32 * 30,
    learning_rate=1e-2,
)
SHARED_CEILING = 8.0  # team return of identical policies on RoleSplit (see the module doc)


def _agent(tree, i):
    return jax.tree.map(lambda x: np.asarray(x[i]), tree)


def _same(a, b) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# -- isolation: agent i's parameters learn from agent i's data only --------------------------


def test_independent_agents_learn_only_from_their_own_data():
    """The batch stage and the update, twice: the second time agent 1's data is changed
    (rewards ×100 + 50, other observations and actions, old log-probs 3 lower so its KL
    early stop fires at once). Agent 0's new parameters and optimizer state must be bit
    for bit the same; agent 1's must differ. Fails if anything mixes agents: advantage or
    value-target normalization over all agents, a joint gradient-norm clip, a joint KL stop.
    MAPPO's critics (on the global state, shared by both agents' inputs) included.
    """
    cfg = ROLES.replace(
        num_envs=4,
        num_steps=8,
        num_minibatches=2,
        update_epochs=2,
        target_kl=0.05,
        critic_input="global",
    )
    trainer = marl.make_trainer(cfg)
    network, menv = trainer.setup.network, trainer.setup.env
    state = jax.jit(trainer.init)(jax.random.key(0))
    learner, hp = state.learner, state.learner.hyperparams
    coefs = schedules.coefficients(cfg, hp, state.step)
    t, b, n = cfg.num_steps, cfg.num_envs, 2

    def trajectory(obs, state_obs, action, reward, log_prob_shift):
        # The global state is every agent's input (MAPPO): it comes from `state_obs`, so
        # that changing agent 1's own observation leaves agent 0's inputs as they were.
        tree = {**marl.observation_tree(cfg, menv, state_obs), "obs": obs}
        dist_params, values, _ = marl.apply_agents(cfg, network.actor_critic, learner.params, tree)
        log_prob = jax.nn.log_softmax(dist_params["logits"])
        log_prob = jnp.take_along_axis(log_prob, action[..., None], -1)[..., 0]
        return Transition(
            obs=tree,
            episode_start=jnp.zeros((t, b), bool),
            action=action,
            log_prob=log_prob + log_prob_shift,
            dist_params=dist_params,
            value_pred=values,
            reward=reward,
            terminated=jnp.zeros((t, b), bool),
            done=jnp.zeros((t, b), bool).at[3].set(True),
            next_value_pred=values + 0.1,
        )

    @jax.jit
    def learn(obs, action, reward, shift):
        traj = trajectory(obs, base_obs, action, reward, shift)
        batch, value_stats, _ = marl.make_agent_batch(cfg, traj, hp, learner.norm.value, n)
        params, opt_state, metrics = marl.update_agents(
            cfg, network, learner.params, learner.opt_state, batch, hp, coefs, jax.random.key(2)
        )
        return params, opt_state, metrics["epochs_completed"], value_stats

    k_obs, k_act, k_rew, k_alt = jax.random.split(jax.random.key(1), 4)
    obs = base_obs = jax.random.uniform(k_obs, (t, b, n, menv.obs_dim))
    action = jax.random.randint(k_act, (t, b, n), 0, 4)
    reward = jax.random.normal(k_rew, (t, b, n))
    params, opt_state, epochs, stats = learn(obs, action, reward, jnp.zeros((t, b, n)))
    params2, opt_state2, epochs2, stats2 = learn(
        obs.at[:, :, 1].set(jax.random.uniform(k_alt, (t, b, menv.obs_dim))),
        action.at[:, :, 1].set((action[:, :, 1] + 1) % 4),
        reward.at[:, :, 1].multiply(100.0).at[:, :, 1].add(50.0),
        jnp.zeros((t, b, n)).at[:, :, 1].set(-3.0),
    )
    assert not _same(_agent(params, 0), _agent(learner.params, 0))  # agent 0 learned
    assert _same(_agent(params, 0), _agent(params2, 0))
    assert _same(_agent(opt_state, 0), _agent(opt_state2, 0))
    assert _same(_agent(stats, 0), _agent(stats2, 0))
    assert not _same(_agent(params, 1), _agent(params2, 1))
    # Each agent's own KL early stop: agent 1 stops at its first minibatch, agent 0 does not.
    assert epochs[0] > 0 and epochs2[1] == 0 and epochs2[0] == epochs[0]


# -- RoleSplit: independent vs shared, trained under jit once ---------------------------------


@pytest.fixture(scope="module")
def roles_runs():
    """Independent agents started from IDENTICAL parameters, and a shared network; one
    compiled `run` each, called twice (two ent_coef values) to show it compiles once."""
    out = {}
    # The shared run is MAPPO: one critic on the global state with one output per agent.
    shared = ROLES.replace(agent_params="shared", critic_input="global")
    for name, cfg in (("independent", ROLES), ("shared", shared)):
        trainer = marl.make_trainer(cfg)
        state = trainer.init(jax.random.key(0))
        if name == "independent":  # every agent gets agent 0's parameters
            same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), state.learner.params)
            state = state._replace(learner=state.learner._replace(params=same))
        run = jax.jit(trainer.run, static_argnums=1)
        half = cfg.num_updates // 2  # chunks compose: run(run(s, h), h) = run(s, 2h)
        middle, first = run(state, half)
        final, second = run(middle, half)
        metrics = jax.tree.map(lambda a, b: np.concatenate([a, b]), first, second)
        other = state.learner.hyperparams._replace(ent_coef=jnp.float32(0.0))
        run(state._replace(learner=state.learner._replace(hyperparams=other)), half)
        out[name] = (cfg, state, final, jax.device_get(metrics), run._cache_size())
    return out


def test_both_modes_compile_once(roles_runs):
    for name, (*_, cache_size) in roles_runs.items():
        assert cache_size == 1, name


def test_independent_agents_diverge_into_roles(roles_runs):
    cfg, start, final, metrics, _ = roles_runs["independent"]
    assert _same(_agent(start.learner.params, 0), _agent(start.learner.params, 1))
    params = final.learner.params
    diffs = [np.abs(x[0] - x[1]).max() for x in jax.tree.leaves(params)]
    assert max(diffs) > 0.1
    # Agent 0 names the cue, agent 1 the next one: the roles the task pays for.
    act = jppo.make_policy(cfg, final)
    cues = jnp.eye(4)
    actions = act(jnp.stack([cues, cues], axis=1), jax.random.key(0), deterministic=True)
    np.testing.assert_array_equal(actions, np.stack([np.arange(4), (np.arange(4) + 1) % 4], 1))
    assert np.mean(metrics["episode_return"][-5:]) > 14.0
    for agent in ("agent_0", "agent_1"):
        assert f"policy_loss/{agent}" in metrics and f"approx_kl/{agent}" in metrics
        assert f"episode_return/{agent}" in metrics
    np.testing.assert_allclose(
        metrics["episode_return"],
        metrics["episode_return/agent_0"] + metrics["episode_return/agent_1"],
        rtol=1e-6,
    )


def test_shared_network_has_one_parameter_set_and_cannot_split_roles(roles_runs):
    cfg, start, final, metrics, _ = roles_runs["shared"]
    single = jax.eval_shape(marl.build(cfg).network.init, jax.random.key(0))
    got = jax.tree.map(lambda x: x.shape, final.learner.params)
    assert got == jax.tree.map(lambda x: x.shape, single)  # no agent axis
    returns = metrics["episode_return"]
    assert np.mean(returns[-5:]) <= SHARED_CEILING + 0.5
    assert np.mean(returns[-5:]) > 6.0  # it learns what identical policies can
    assert "policy_loss/agent_0" not in metrics  # one network, one loss


# -- vmapped over seeds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent_params, critic_input",
    [
        ("independent", "local"),
        ("shared", "local"),
        ("shared", "global"),
        ("independent", "global"),
    ],
)
def test_vmapped_init_factors_one_matrix_at_a_time(agent_params, critic_input):
    """Seeds vmapped over `init` (train_seeds, sweeps, PBT) must not batch the orthogonal
    initializers' QR: jaxlib's batched QR hung the shared network's vmapped run on this CPU
    (it did, before the shared init went through sequential_vmap like the independent one)."""
    cfg = jppo.PPOConfig(
        env="MPE_simple_spread_v3",
        num_envs=4,
        num_steps=8,
        total_timesteps=64,
        agent_params=agent_params,
        critic_input=critic_input,
    )
    init = marl.make_trainer(cfg).init
    shapes = qr_operand_shapes(jax.vmap(init), jax.random.split(jax.random.key(0), 3))
    assert shapes and all(len(s) == 2 for s in shapes), shapes


# -- the single-agent tools on a multi-agent run ---------------------------------------------


def test_evaluate_policy_checkpoint_and_health_check(roles_runs):
    cfg, _, final, metrics, _ = roles_runs["independent"]
    returns = jppo.evaluate(cfg, final, jax.random.key(1), num_episodes=8)
    assert returns.shape == (8,) and np.all(returns == 16.0)  # deterministic roles: all hits
    obs, _ = RoleSplit().reset(jax.random.key(3))
    actions = jppo.make_policy(cfg, final)(obs, jax.random.key(0), deterministic=True)
    assert set(actions) == {"agent_0", "agent_1"}
    with tempfile.TemporaryDirectory() as d:
        jppo.save(f"{d}/ckpt", final, cfg)
        loaded, cfg2, _ = jppo.load(f"{d}/ckpt", env=cfg.env)
    assert cfg2 == cfg and _same(loaded.learner.params, jax.device_get(final.learner.params))
    codes = {f.code for f in jppo.health_check(metrics, cfg)}
    assert not codes & {"kl_explosion", "ratio_overflow", "value_collapse"}, codes


def test_train_seeds_with_independent_global_critics():
    """MAPPO with independent agents: each agent's critic on the global state [B, N·D],
    seeds vmapped in one program (train_seeds); per-agent metrics per seed."""
    cfg = ROLES.replace(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2, critic_input="global")
    out = jppo.train_seeds(cfg, jax.random.split(jax.random.key(0), 2))
    critic = out.state.learner.params["critic"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert critic.shape == (2, 2, 2 * 4, 64)  # [seeds, agents, global state N·D, hidden]
    assert out.metrics["episode_return"].shape == (2, 2)
    assert np.isfinite(out.metrics["value_loss/agent_1"]).all()


def test_sweep_members_equal_separate_multi_agent_runs():
    """A sweep over learning rates with independent agents: member i is `jppo.train` with
    the i-th rate (same key), per-agent metrics carry the member axis."""
    cfg = ROLES.replace(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 3)
    rates = [1e-3, 3e-2]
    key = jax.random.key(4)
    swept = jppo.sweep(cfg, key, learning_rate=rates)
    assert swept.metrics["policy_loss/agent_1"].shape == (2, 3)
    for i, rate in enumerate(rates):
        alone = jppo.train(cfg.replace(learning_rate=rate), key)
        for name in ("episode_return/agent_0", "approx_kl/agent_1", "value_loss/agent_0"):
            np.testing.assert_allclose(
                swept.metrics[name][i], alone.metrics[name], rtol=2e-4, atol=1e-6
            )
        for x, y in zip(
            jax.tree.leaves(_agent(swept.state.learner.params, i)),
            jax.tree.leaves(alone.state.learner.params),
            strict=True,
        ):
            assert x.shape[0] == 2  # the agent axis inside the member
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    kernels = swept.state.learner.params["actor"]["params"]
    assert not np.allclose(*np.asarray(jax.tree.leaves(kernels)[-1]))  # the rates differ


@pytest.mark.slow
def test_pbt_copies_every_agents_network_and_the_copies_learn_the_roles():
    """PBT on RoleSplit: two members whose rate is too small to learn, two that learn. At
    the exploit the slow ones copy a fast one (team return ranks them), taking all of its
    agents' networks: their very next update already plays both roles."""
    from jppo.pbt import PBTConfig, train_pbt

    cfg = ROLES.replace(total_timesteps=16 * 32 * 24)
    pbt_cfg = PBTConfig(
        population_size=4, interval=12, exploit_fraction=0.5, explore=("learning_rate",)
    )
    out = train_pbt(
        cfg, pbt_cfg, jax.random.key(2), learning_rate=jnp.array([1e-5, 1e-2, 1e-5, 1e-2])
    )
    lineage = np.asarray(out.lineage)
    assert lineage.shape == (2, 4)  # who each member copied after each of two intervals
    assert set(lineage[0, [0, 2]]) <= {1, 3} and list(lineage[0, [1, 3]]) == [1, 3]
    np.testing.assert_array_equal(lineage[-1], np.arange(4))  # no exploit after the last
    rates = np.asarray(out.hyperparams["learning_rate"])  # [members, intervals]
    np.testing.assert_allclose(rates[[0, 2], 0], 1e-5)
    assert np.all(rates[:, 1] >= 8e-3 - 1e-9), rates  # copied from 1e-2, times 0.8 or 1.25
    team = np.asarray(out.metrics["episode_return"])
    assert team.shape == (4, 24)
    # Random play earns about 4; a copy of only the rate would start from there again.
    assert np.all(team[[0, 2], 11] < 6.0) and np.all(team[[0, 2], 12] > 13.0), team[:, 10:14]
    assert np.all(team[:, -3:].mean(axis=1) > 14.0), team[:, -3:]
    params = out.population.learner.params
    assert all(x.shape[:2] == (4, 2) for x in jax.tree.leaves(params))  # [members, agents]
    diffs = [np.abs(x[:, 0] - x[:, 1]).max() for x in jax.tree.leaves(params)]
    assert max(diffs) > 0.1  # the agents inside a member stay distinct networks


def test_cli_trains_evaluates_and_resumes_a_jaxmarl_env(tmp_path):
    """`jppo train --env MPE_simple_spread_v3`: per-agent columns in metrics.csv, an
    evaluation, a checkpoint that `jppo eval` reads and a resumed run that ends where the
    uninterrupted one does."""
    args = ("--env", "MPE_simple_spread_v3", "--num-envs", "4", "--num-steps", "16")
    args += ("--update-epochs", "1", "--eval-every", "4", "--eval-episodes", "2", "--plain")
    whole, part = tmp_path / "whole", tmp_path / "part"
    proc = run_cli("train", *args, "--total-timesteps", "512", "--out", str(whole))
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    with open(whole / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for agent in ("agent_0", "agent_1", "agent_2"):
        assert f"episode_return/{agent}" in rows[0] and f"approx_kl/{agent}" in rows[0]
    team = [float(r["episode_return"]) for r in rows]
    per_agent = [sum(float(r[f"episode_return/agent_{i}"]) for i in range(3)) for r in rows]
    np.testing.assert_allclose(team, per_agent, rtol=1e-5)
    assert (whole / "evaluations.csv").read_text().count("\n") == 3  # header, updates 4, 8
    proc = run_cli("eval", str(whole), "--episodes", "2")
    assert proc.returncode == 0 and "mean return:" in proc.stdout, proc.stderr

    # The same run stopped by Ctrl-C after update 4 and resumed: the same metrics, bit for bit.
    budget = ("--total-timesteps", "512", "--chunk-updates", "1")
    code, _, err = interrupt_cli("train", *args, *budget, "--out", str(part), at="update 4/")
    assert code == 130, err
    proc = run_cli("train", "--resume", str(part), "--plain")
    assert proc.returncode == 0, proc.stderr
    assert "resuming at update" in proc.stdout
    assert (part / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
