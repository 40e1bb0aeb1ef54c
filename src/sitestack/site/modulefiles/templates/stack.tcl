#%Module1.0
# __HEADER__
proc ModulesHelp { } {
    puts stderr __HELP__
}
__WHATIS__
__EXTENSIONS__
__FAMILY__
__DEPENDS_ON__
set prefix __PREFIX__
# HOME is read at load time, so one modulefile serves every user.
set home [getenv HOME]
set userbase [file join $home __USER_BASE__]
__TOOL__
prepend-path PATH [file join $prefix bin]
# pushenv, not setenv: unload restores a value the user had before.
pushenv PYTHONUSERBASE $userbase
prepend-path PATH [file join $userbase bin]
__IDENTITY__
__CONDA__
__SETENV__
__PREPEND_PATH__
__FRONT_DOOR__
__DEPRECATED__
