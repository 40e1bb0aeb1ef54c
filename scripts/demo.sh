#!/usr/bin/env bash
# The README's first command: install sitestack, build and publish examples/conda.toml
# (numpy + pip from PyPI) into ./demo-site, then load it with Lmod as a user with no sitestack
# of their own and follow the seed page: `conda activate base`, `conda create --clone`,
# `conda install` in the clone, a layered venv, and `pip install --user`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD/demo-site"
PY=${PYTHON:-python3}

echo "==> installing sitestack"
"$PY" -m pip install -q -e . 2>&1 | grep -v "Running pip as the 'root' user" || true
SITESTACK="$("$PY" -c 'import sys, os; print(os.path.join(os.path.dirname(sys.executable), "sitestack"))')"

LMOD_INIT=/usr/share/lmod/lmod/init/bash
if [ ! -f "$LMOD_INIT" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Lmod (apt-get install lmod)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lmod >/dev/null
  else
    echo "Lmod is not installed; ask your admin for 'lmod' (Debian/Ubuntu package)" >&2
    exit 1
  fi
fi

if [ ! -d "$ROOT/stacks/conda/2022-07-19" ]; then
  echo "==> sitestack build examples/conda.toml --root $ROOT --version 2022-07-19 --default"
  "$SITESTACK" build examples/conda.toml --root "$ROOT" --version 2022-07-19 --default
else
  echo "==> $ROOT already holds conda/2022-07-19 (published stacks never change; rm -rf $ROOT to rebuild)"
fi
"$SITESTACK" list --root "$ROOT"

# A user's shell: Lmod, a private HOME inside the demo folder, nothing else.
mkdir -p "$ROOT/home"
rm -rf "$ROOT/home/my_env" "$ROOT/home/my_layer" "$ROOT/home/envs" "$ROOT/home/.conda"
# Keep the machine's CA settings (a site proxy's CA), or uv in the clean shell cannot reach an index.
CA_ENV=()
for v in SSL_CERT_FILE SSL_CERT_DIR PIP_CERT REQUESTS_CA_BUNDLE; do
  [ -n "${!v:-}" ] && CA_ENV+=("$v=${!v}")
done
# The user's PATH has no sitestack of its own: `module load` gives the site's (and `conda`).
env -i "${CA_ENV[@]}" HOME="$ROOT/home" USER="${USER:-root}" LANG=C.UTF-8 PATH="/usr/local/bin:/usr/bin:/bin" \
    ROOT="$ROOT" LMOD_INIT="$LMOD_INIT" \
    bash --noprofile --norc -euo pipefail -c '
source "$LMOD_INIT"
show() { printf "\n\$ %s\n" "$*"; "$@"; }
path_before="$PATH"
show module use "$ROOT/modulefiles"
show module load conda
show which python3 pip sitestack conda
show python -c "import numpy, sys; print(\"numpy\", numpy.__version__, \"from\", sys.prefix)"
show echo "PYTHONUSERBASE=$PYTHONUSERBASE"
# The seed page, verbatim: conda activate base, a clone, conda install in it.
show conda activate base
show echo "CONDA_DEFAULT_ENV=$CONDA_DEFAULT_ENV CONDA_PROMPT_MODIFIER=$CONDA_PROMPT_MODIFIER"
show conda install -y tabulate || echo "(refused: base is the read-only stack)"
show conda create --clone base --prefix "$HOME/envs/base-clone"
show conda activate "$HOME/envs/base-clone"
show conda install -y tabulate
show python -c "import sys, tabulate, numpy; print(\"clone at\", sys.prefix, \"has tabulate\", tabulate.__version__)"
show conda deactivate
show conda deactivate
# A layer: a plain venv on the stack, and sitestack venv (the same, in milliseconds).
show python -m venv --system-site-packages "$HOME/my_env"
show "$HOME/my_env/bin/python" -c "import numpy; print(\"my_env inherits numpy\", numpy.__version__)"
show sitestack venv "$HOME/my_layer"
# Only what the stack lacks lands in the layer; numpy stays in the stack.
show sitestack install --layer "$HOME/my_layer" --dry-run tabulate numpy
show sitestack install --layer "$HOME/my_layer" tabulate
show "$HOME/my_layer/bin/python" -c "import tabulate, numpy; print(\"tabulate from\", tabulate.__file__); print(\"numpy from\", numpy.__file__)"
show pip install -q --user cowsay
show which cowsay
show cowsay -t "installed with pip --user into $PYTHONUSERBASE"
show module unload conda
show module unuse "$ROOT/modulefiles"
if [ "$PATH" = "$path_before" ]; then echo; echo "PATH after unload is exactly as before"; else echo "PATH differs after unload" >&2; exit 1; fi
type conda >/dev/null 2>&1 && { echo "conda is still defined after unload" >&2; exit 1; }
echo "conda and sitestack are gone with the module"
'
echo
echo "==> done. Try it yourself:  source $LMOD_INIT; module use $ROOT/modulefiles; module load conda"
