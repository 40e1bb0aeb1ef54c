# Written by sitestack clone. Use it with `source bin/activate` (bash, zsh, dash);
# `deactivate` undoes it. The clone gets its own PYTHONUSERBASE, so `pip install --user`
# never mixes with the stack's user base. (No values in comments: nothing quotes a newline there.)
deactivate () {
    if [ -n "${_SITESTACK_CLONE_ACTIVE:-}" ]; then
        if [ -n "${_SITESTACK_OLD_PATH+x}" ]; then
            PATH="$_SITESTACK_OLD_PATH"; export PATH; unset _SITESTACK_OLD_PATH
        else unset PATH; fi
        if [ -n "${_SITESTACK_OLD_PYTHONUSERBASE+x}" ]; then
            PYTHONUSERBASE="$_SITESTACK_OLD_PYTHONUSERBASE"; export PYTHONUSERBASE; unset _SITESTACK_OLD_PYTHONUSERBASE
        else unset PYTHONUSERBASE; fi
        if [ -n "${_SITESTACK_OLD_SITESTACK_CLONE+x}" ]; then
            SITESTACK_CLONE="$_SITESTACK_OLD_SITESTACK_CLONE"; export SITESTACK_CLONE; unset _SITESTACK_OLD_SITESTACK_CLONE
        else unset SITESTACK_CLONE; fi
        if [ -n __CONDA__ ]; then
            if [ -n "${_SITESTACK_OLD_CONDA_PREFIX+x}" ]; then
                CONDA_PREFIX="$_SITESTACK_OLD_CONDA_PREFIX"; export CONDA_PREFIX; unset _SITESTACK_OLD_CONDA_PREFIX
            else unset CONDA_PREFIX; fi
        fi
        if [ -n "${_SITESTACK_OLD_PS1+x}" ]; then PS1="$_SITESTACK_OLD_PS1"; unset _SITESTACK_OLD_PS1; fi
        unset _SITESTACK_CLONE_ACTIVE
        hash -r 2>/dev/null || true
    fi
    if [ "${1:-}" != nondestructive ]; then unset -f deactivate; fi
}
deactivate nondestructive
if [ -n "${PATH+x}" ]; then _SITESTACK_OLD_PATH="$PATH"; fi
PATH="$HOME"/__USER_BASE__/bin:__PREFIX__/bin:"$PATH"; export PATH
if [ -n "${PYTHONUSERBASE+x}" ]; then _SITESTACK_OLD_PYTHONUSERBASE="$PYTHONUSERBASE"; fi
PYTHONUSERBASE="$HOME"/__USER_BASE__; export PYTHONUSERBASE
if [ -n "${SITESTACK_CLONE+x}" ]; then _SITESTACK_OLD_SITESTACK_CLONE="$SITESTACK_CLONE"; fi
SITESTACK_CLONE=__PREFIX__; export SITESTACK_CLONE
if [ -n __CONDA__ ]; then
    if [ -n "${CONDA_PREFIX+x}" ]; then _SITESTACK_OLD_CONDA_PREFIX="$CONDA_PREFIX"; fi
    CONDA_PREFIX=__PREFIX__; export CONDA_PREFIX
fi
_SITESTACK_CLONE_ACTIVE=1
if [ -n "${PS1+x}" ] && [ -z "${VIRTUAL_ENV_DISABLE_PROMPT:-}" ]; then
    _SITESTACK_OLD_PS1="$PS1"; PS1=__PROMPT__"$PS1"
fi
hash -r 2>/dev/null || true
