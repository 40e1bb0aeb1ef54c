#!/bin/sh
# __HEADER__
# A Jupyter kernel with the environment its module gives (sitestack's one environment model,
# rendered here as POSIX sh), then exec: the kernel is this process, so interrupts reach it.
# A path variable's entry moves to the front when prepended, as Lmod's prepend_path does.
ss_drop() {
    eval "ss_in=\${$1-}"
    ss_out=
    ss_ifs=$IFS; IFS=:; set -f
    for ss_p in $ss_in; do
        if [ -n "$ss_p" ] && [ "$ss_p" != "$2" ]; then ss_out=${ss_out:+$ss_out:}$ss_p; fi
    done
    IFS=$ss_ifs; set +f
    eval "$1=\$ss_out"
}
ss_prepend() {
    ss_drop "$1" "$2"
    eval "$1=\$2\${$1:+:\$$1}"
    export "$1"
}
# The Jupyter server's own environment must not leak in: a stack, clone or venv active where
# the server started leaves PATH (as Lmod's family swap and deactivate would take it out), and
# what would change which interpreter or packages the kernel gets goes.
if [ -n "${SITESTACK_PREFIX:-}" ]; then ss_drop PATH "$SITESTACK_PREFIX/bin"; fi
if [ -n "${SITESTACK_CLONE:-}" ]; then ss_drop PATH "$SITESTACK_CLONE/bin"; fi
if [ -n "${VIRTUAL_ENV:-}" ]; then ss_drop PATH "$VIRTUAL_ENV/bin"; fi
if [ -n "${CONDA_PREFIX:-}" ]; then ss_drop PATH "$CONDA_PREFIX/bin"; fi
if [ -n "${PYTHONUSERBASE:-}" ]; then ss_drop PATH "$PYTHONUSERBASE/bin"; fi
unset PYTHONPATH PYTHONHOME PYTHONEXECUTABLE PYTHONSTARTUP PYTHONNOUSERSITE PYTHONSAFEPATH \
    PYTHONPLATLIBDIR PYTHONUSERBASE VIRTUAL_ENV VIRTUAL_ENV_PROMPT \
    CONDA_PREFIX CONDA_DEFAULT_ENV CONDA_SHLVL CONDA_PROMPT_MODIFIER \
    SITESTACK_STACK SITESTACK_PREFIX SITESTACK_STACK_ROOT SITESTACK_CLONE _SITESTACK_SAVED
export PATH
# HOME is read now, as the modulefile reads it at load time (Lmod's pathJoin: no '//').
ss_home=${HOME-}
while :; do case $ss_home in *//*) ss_home=${ss_home%%//*}/${ss_home#*//} ;; *) break ;; esac; done
__MODULES__
__OPS__
__MESSAGES__
exec __PYTHON__ __ARGS__ "$@"
