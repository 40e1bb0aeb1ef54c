# Written by `sitestack stage`. Source it (with `.` or `source`) in sh, bash or zsh.
export PATH=__BINS__"${PATH:+:$PATH}"
export PYTHONNOUSERSITE=1  # the staged copy only: no user site-packages
export SITESTACK_STAGED=__STAGED__
export SITESTACK_PREFIX=__PREFIX__
unset PYTHONHOME
