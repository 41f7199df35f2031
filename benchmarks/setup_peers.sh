#!/usr/bin/env bash
# Builds the virtual environment that benchmarks/compare_peers.py runs PureJaxRL, rejax and
# Stable-Baselines3 in. They need gymnax 0.0.9 (its old 5-value `step`), jppo needs gymnax 1.0,
# so they cannot share jppo's environment; everything that decides the speed (jax, jaxlib,
# flax, optax, chex, distrax) is pinned to jppo's own versions so that only the code differs.
#
#   benchmarks/setup_peers.sh                   # -> benchmarks/.peers-venv
#   benchmarks/setup_peers.sh /tmp/peers-venv   # another place (pass --venv to compare_peers.py)
#
# Settings, by environment variable:
#   PYTHON          interpreter that runs jppo; its jax version is matched (default: python3)
#   JAX_VERSION     jax/jaxlib version to install (default: PYTHON's)
#   TORCH_VERSION   torch for SB3 (default 2.13.0: a CPU build of it lies on the dev machines'
#                   disk, while a plain `torch` would pull a CUDA build of several GB)
#   TORCH_PIP_ARGS  extra pip arguments for torch, e.g. `--index-url <a CPU wheel index>`
#   PEERS_WHEELS    a folder of wheels to install from, with no index (machines with no network)
#   SYSTEM_SITE=1   the venv also sees PYTHON's packages (a GPU image's CUDA jax plugin and its
#                   torch), and installs only what is missing there
# SB3 is optional: if torch cannot be installed, the JAX peers are set up and SB3 is skipped.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/.peers-venv}"
python="${PYTHON:-python3}"
jax_version="${JAX_VERSION:-$("$python" -c 'import jax; print(jax.__version__)')}"
torch_version="${TORCH_VERSION:-2.13.0}"

# `pkg==version` for each of these that the jppo interpreter has, so the peers get the same.
# The CUDA plugins are listed too: on a GPU image the venv then gets the same backend.
pins="$("$python" - <<'EOF'
import importlib.metadata as md
names = ["flax", "optax", "chex", "distrax"]
names += sorted({d.metadata["Name"] for d in md.distributions()
                 if d.metadata["Name"].lower().replace("_", "-").startswith("jax-cuda")})
for name in names:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
EOF
)"

venv_args=()
[[ "${SYSTEM_SITE:-0}" == 1 ]] && venv_args+=(--system-site-packages)
pip_args=(--disable-pip-version-check)
[[ -n "${PEERS_WHEELS:-}" ]] && pip_args+=(--no-index --find-links "$PEERS_WHEELS")

echo "peer venv: $venv (python $("$python" -c 'import platform; print(platform.python_version())'), jax $jax_version)"
"$python" -m venv "${venv_args[@]}" "$venv"
pip=("$venv/bin/python" -m pip install "${pip_args[@]}")

# shellcheck disable=SC2086  # $pins is a list of words
"${pip[@]}" "jax==$jax_version" "jaxlib==$jax_version" $pins gymnax==0.0.9 rejax==0.1.3
"$venv/bin/python" -c 'import gymnax, rejax, jax; print("JAX peers ok: jax", jax.__version__, jax.devices())'

# Stable-Baselines3 (the CPU reference): needs torch; optional.
if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "torch already present: $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
# shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of words
elif ! "${pip[@]}" "torch==$torch_version" ${TORCH_PIP_ARGS:-}; then
    echo "setup_peers: torch==$torch_version could not be installed; SB3 skipped" \
        "(set TORCH_VERSION or TORCH_PIP_ARGS to try another; compare_peers.py runs without it)"
    exit 0
fi
# Pin the torch now present, so that SB3's own `torch>=...` cannot pull another build.
torch_now="$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
if "${pip[@]}" stable-baselines3 gymnasium "torch==$torch_now"; then
    "$venv/bin/python" -c 'import stable_baselines3 as s; print("SB3 ok:", s.__version__)'
else
    echo "setup_peers: stable-baselines3 could not be installed; SB3 skipped"
fi
