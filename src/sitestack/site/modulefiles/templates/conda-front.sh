\local cmd="${1-__missing__}"
case "$cmd" in
    activate|deactivate)
        \local dialect=posix ask
        if [ -n "${ZSH_VERSION-}" ]; then
            dialect=zsh
            if [ -o promptsubst ]; then
                dialect=bash
            fi
        elif [ -n "${BASH_VERSION-}" ] && \shopt -q promptvars 2>/dev/null; then
            dialect=bash
        fi
        ask="$(PS1="${PS1-}" __CONDA__ "shell.$dialect" "$@")" || \return
        \eval "$ask"
        \hash -r
        ;;
    *)
        __CONDA__ "$@"
        ;;
esac
