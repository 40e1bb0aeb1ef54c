#!/usr/bin/env bash
# Install everything sitestack's test suite needs, on a fresh Debian 12 machine.
#
# Run as root from anywhere (it finds the repository from its own path):
#     bash scripts/install-test-deps.sh
#
# It is idempotent: a second run only checks and re-verifies.
#   1. Debian packages: Lmod, Open MPI, squashfs/xfs/fuse tools, Tcl, zstd, a C toolchain,
#      Debian's python3.11 (+ venv) for unprivileged test users (they cannot read /root, so they
#      cannot run a pyenv python), and the user-management tools (useradd, runuser, setpriv).
#   2. A PRIVATE, self-contained copy of Debian's environment-modules (Tcl "Environment
#      Modules" 5.x). The package conflicts with lmod, so it is unpacked with `dpkg -x` into
#      $SITESTACK_TEST_ENVMODULES (default /opt/sitestack-test/envmodules) and its hard-coded
#      /usr/share/modules, /etc/environment-modules and /usr/lib/<multiarch> paths are rewritten
#      to point inside that folder. Initialise it with:
#          eval "$(tclsh8.6 DIR/usr/lib/<multiarch>/modulecmd.tcl bash autoinit)"
#   3. Both module systems are checked for real: `module avail`, `module load`, `module unload`.
#   4. `python3 -m pip install -e '.[test]'` with the python3 first on PATH.
#
# Environment knobs:
#   SITESTACK_TEST_ENVMODULES   where to put the private Environment Modules (default above)
#   SITESTACK_TEST_FORCE_APT=1  run apt-get update/install even if every package is present
#   SITESTACK_TEST_SKIP_PIP=1   skip step 4
set -euo pipefail

say() { printf '==> %s\n' "$*"; }
die() { printf 'install-test-deps: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and writes /opt)"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENVMOD_DIR=${SITESTACK_TEST_ENVMODULES:-/opt/sitestack-test/envmodules}
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(
  lmod
  openmpi-bin libopenmpi-dev
  squashfs-tools squashfuse xfsprogs fuse3 libfuse3-dev   # `stage --mount`: mksquashfs/unsquashfs, squashfuse_ll as a user, fusermount3
  tcl tcl8.6 zstd
  gcc make
  python3.11 python3.11-venv
  passwd util-linux
  ca-certificates perl
  chromium zsh dash fish   # catalog pages in a real browser (Playwright drives Debian's chromium); `sitestack load` in each shell
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ] || [ "${SITESTACK_TEST_FORCE_APT:-0}" = 1 ]; then
  say "apt-get update"
  apt-get update
  say "apt-get install ${APT_PACKAGES[*]}"
  apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
else
  say "Debian packages already installed: ${APT_PACKAGES[*]}"
fi

# Playwright (pip, test extra) drives /usr/bin/chromium; `playwright install` is never needed.
for tool in tclsh8.6 useradd runuser setpriv mpiexec mksquashfs unsquashfs squashfuse_ll squashfuse mkfs.xfs fusermount3 zstd gcc make chromium zsh dash fish; do
  command -v "$tool" >/dev/null || die "$tool not found after installing packages"
done
[ -f /usr/share/lmod/lmod/init/bash ] || die "Lmod's /usr/share/lmod/lmod/init/bash is missing"
# Unprivileged FUSE mounts (`stage --mount` as a user: squashfuse_ll through fusermount3) need
# /dev/fuse to be 0666, as Debian's udev rule makes it; where no udev runs (a container) it
# may be 0600, and fusermount3 then fails with "failed to open /dev/fuse: Permission denied".
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  say "chmod 0666 /dev/fuse (udev's default mode; unprivileged FUSE mounts need it)"
  chmod 0666 /dev/fuse
fi
/usr/bin/python3.11 -c 'import ensurepip, venv' || die "/usr/bin/python3.11 cannot make venvs"

# ---------------------------------------------------------------------------------------------
# 2. Private Environment Modules (Tcl)
# ---------------------------------------------------------------------------------------------
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
[ -n "$MULTIARCH" ] || die "cannot determine the Debian multiarch triplet"
STAMP="$ENVMOD_DIR/.sitestack-envmodules"
MODULECMD="$ENVMOD_DIR/usr/lib/$MULTIARCH/modulecmd.tcl"

if [ -f "$STAMP" ] && [ -f "$MODULECMD" ]; then
  say "private Environment Modules already in $ENVMOD_DIR ($(head -n1 "$STAMP"))"
else
  say "installing a private copy of environment-modules into $ENVMOD_DIR"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # apt-get download drops privileges to _apt, which must be able to write here
  chown _apt "$work" 2>/dev/null || chmod 1777 "$work"
  (cd "$work" && apt-get download environment-modules) \
    || { say "apt-get download failed; refreshing package lists"; apt-get update \
         && (cd "$work" && apt-get download environment-modules); } \
    || die "apt-get download environment-modules failed"
  deb=$(ls "$work"/environment-modules_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  mkdir -p "$work/tree"
  dpkg -x "$deb" "$work/tree"
  [ -f "$work/tree/usr/lib/$MULTIARCH/modulecmd.tcl" ] \
    || die "modulecmd.tcl not at usr/lib/$MULTIARCH/ in $deb"

  # Make the copy self-contained: the package hard-codes its install paths. Without this,
  # MODULESHOME points at a missing /usr/share/modules, the C extension
  # (libtclenvmodules.so) is not found, and a system-wide /etc/environment-modules (if some
  # machine has one) would leak its siteconfig/initrc into the tests.
  grep -rlIZ -e /usr/share/modules -e /etc/environment-modules -e "/usr/lib/$MULTIARCH" \
      -e /usr/lib/modulecmd.tcl "$work/tree" \
    | xargs -0 -r perl -pi -e '
        BEGIN { $d = shift @ARGV; $m = shift @ARGV }
        s{(?<![\w./-])/usr/share/modules(?![\w-])}{$d/usr/share/modules}g;
        s{(?<![\w./-])/etc/environment-modules(?![\w-])}{$d/etc/environment-modules}g;
        s{(?<![\w./-])/usr/lib/\Q$m\E(?![\w-])}{$d/usr/lib/$m}g;
        s{(?<![\w./-])/usr/lib/modulecmd\.tcl}{$d/usr/lib/modulecmd.tcl}g;
      ' "$ENVMOD_DIR" "$MULTIARCH"

  # Deterministic start: no default modulepaths (the package would add its demo modulefiles
  # dir via modulespath and initrc), so MODULEPATH is empty right after autoinit.
  cat >"$work/tree/etc/environment-modules/modulespath" <<'EOF'
# sitestack test copy: intentionally empty (MODULEPATH starts empty after autoinit).
EOF
  cat >"$work/tree/etc/environment-modules/initrc" <<'EOF'
#%Module5.0
# sitestack test copy: intentionally does nothing (no default `module use`, no default loads).
EOF

  printf 'environment-modules %s (%s)\nmodulecmd=%s\n' "$version" "$MULTIARCH" "$MODULECMD" \
    >"$work/tree/.sitestack-envmodules"
  chmod -R a+rX,go-w "$work/tree"
  mkdir -p "$(dirname "$ENVMOD_DIR")"
  chmod 755 "$(dirname "$ENVMOD_DIR")"
  rm -rf "$ENVMOD_DIR"
  mv "$work/tree" "$ENVMOD_DIR"
  chmod 755 "$ENVMOD_DIR"
  say "environment-modules $version unpacked; modulecmd: $MODULECMD"
fi

# ---------------------------------------------------------------------------------------------
# 3. Verify both module systems for real, in a clean bash.
# ---------------------------------------------------------------------------------------------
check=$(mktemp -d)
chmod 755 "$check"
mkdir -p "$check/lua/ssprobe" "$check/tcl/ssprobe"
cat >"$check/lua/ssprobe/1.0.lua" <<'EOF'
setenv("SSPROBE", "lmod-ok")
prepend_path("PATH", "/ssprobe/bin")
EOF
cat >"$check/tcl/ssprobe/1.0" <<'EOF'
#%Module1.0
setenv SSPROBE tcl-ok
prepend-path PATH /ssprobe/bin
EOF

verify() {  # verify NAME INIT MODULEPATH_DIR EXPECTED
  local name=$1 init=$2 mp=$3 want=$4 out
  out=$(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root USER=root LANG=C.UTF-8 \
        bash --noprofile --norc -c "
          set -e
          $init
          module use '$mp'
          module avail 2>&1 | grep -q ssprobe || { echo 'module avail does not list ssprobe'; exit 1; }
          before=\$PATH
          module load ssprobe
          [ \"\$SSPROBE\" = '$want' ] || { echo \"SSPROBE=\${SSPROBE:-unset}\"; exit 1; }
          case \":\$PATH:\" in *:/ssprobe/bin:*) ;; *) echo 'PATH not changed'; exit 1;; esac
          module unload ssprobe
          [ -z \"\${SSPROBE+x}\" ] || { echo 'SSPROBE still set'; exit 1; }
          [ \"\$PATH\" = \"\$before\" ] || { echo \"PATH not restored: \$PATH\"; exit 1; }
          echo ok
        " 2>&1) || die "$name check failed: $out"
  [ "$(printf '%s\n' "$out" | tail -n1)" = ok ] || die "$name check failed: $out"
  say "$name works: module avail/load/unload"
}
verify "Lmod" "source /usr/share/lmod/lmod/init/bash" "$check/lua" lmod-ok
verify "Environment Modules (Tcl, private copy)" \
  "eval \"\$(tclsh8.6 '$MODULECMD' bash autoinit)\"" "$check/tcl" tcl-ok
rm -rf "$check"

# ---------------------------------------------------------------------------------------------
# 4. The project itself, editable, with its test extra.
# ---------------------------------------------------------------------------------------------
if [ "${SITESTACK_TEST_SKIP_PIP:-0}" = 1 ]; then
  say "skipping pip install (SITESTACK_TEST_SKIP_PIP=1)"
else
  PY=$(command -v python3) || die "no python3 on PATH"
  [ -f "$REPO/README.md" ] || die "$REPO/README.md is missing (pyproject's readme; hatchling needs it)"
  say "installing sitestack[test] (editable) with $PY ($("$PY" --version 2>&1))"
  "$PY" -m pip install -e "$REPO[test]"
  "$PY" -c 'import sitestack, pytest; print("sitestack", sitestack.__file__)'
fi

# ---------------------------------------------------------------------------------------------
# 5. Jupyter: ipykernel's wheels for test stacks, a server venv, configurable-http-proxy.
#    Downloaded once; the suite itself stays offline (--no-index --find-links).
# ---------------------------------------------------------------------------------------------
WHEELS_DIR=${SITESTACK_TEST_WHEELS:-/opt/sitestack-test/wheels}
JUPYTER_DIR=${SITESTACK_TEST_JUPYTER:-/opt/sitestack-test/jupyter}
CHP_DIR=${SITESTACK_TEST_CHP:-/opt/sitestack-test/chp}
CHP_VERSION=5.3.0
PY=$(command -v python3) || die "no python3 on PATH"
# The stacks tests build use the python3 that runs pytest: its wheels, its tag.
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
want="$(stamp_of "$REPO/scripts/kernel-wheels.txt")-$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
if [ "$(cat "$WHEELS_DIR/.stamp" 2>/dev/null)" = "$want" ]; then
  say "ipykernel wheels already in $WHEELS_DIR"
else
  say "downloading ipykernel's wheels (scripts/kernel-wheels.txt) into $WHEELS_DIR"
  mkdir -p "$WHEELS_DIR"
  "$PY" -m pip download -q --only-binary=:all: --no-deps -d "$WHEELS_DIR" -r "$REPO/scripts/kernel-wheels.txt"
  chmod -R a+rX "$WHEELS_DIR"
  echo "$want" >"$WHEELS_DIR/.stamp"
fi
want=$(stamp_of "$REPO/scripts/jupyter-server.txt")
if [ "$(cat "$JUPYTER_DIR/.stamp" 2>/dev/null)" = "$want" ] && [ -x "$JUPYTER_DIR/bin/jupyterhub" ]; then
  say "Jupyter server venv already in $JUPYTER_DIR"
else
  say "making the Jupyter server venv $JUPYTER_DIR (scripts/jupyter-server.txt)"
  rm -rf "$JUPYTER_DIR"
  /usr/bin/python3.11 -m venv "$JUPYTER_DIR"
  "$JUPYTER_DIR/bin/python" -m pip install -q -r "$REPO/scripts/jupyter-server.txt"
  chmod -R a+rX "$JUPYTER_DIR"
  echo "$want" >"$JUPYTER_DIR/.stamp"
fi
if [ -x "$CHP_DIR/node_modules/.bin/configurable-http-proxy" ] \
   && [ "$(cat "$CHP_DIR/.stamp" 2>/dev/null)" = "$CHP_VERSION" ]; then
  say "configurable-http-proxy $CHP_VERSION already in $CHP_DIR"
else
  say "npm install configurable-http-proxy@$CHP_VERSION into $CHP_DIR"
  command -v npm >/dev/null || { apt-get update && apt-get install -y --no-install-recommends nodejs npm; }
  mkdir -p "$CHP_DIR"
  npm install --silent --no-audit --no-fund --prefix "$CHP_DIR" "configurable-http-proxy@$CHP_VERSION"
  echo "$CHP_VERSION" >"$CHP_DIR/.stamp"
fi
"$CHP_DIR/node_modules/.bin/configurable-http-proxy" --version >/dev/null \
  || die "configurable-http-proxy does not run"

say "test dependencies ready (Tcl modules: $MODULECMD)"
