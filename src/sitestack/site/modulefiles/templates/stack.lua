-- __HEADER__
help(__HELP__)
__WHATIS__
__EXTENSIONS__
__FAMILY__
__DEPENDS_ON__
local prefix = __PREFIX__
-- HOME is read at load time, so one modulefile serves every user.
local home = os.getenv("HOME") or ""
local userbase = pathJoin(home, __USER_BASE__)
__TOOL__
prepend_path("PATH", pathJoin(prefix, "bin"))
-- pushenv, not setenv: unload restores a value the user had before.
pushenv("PYTHONUSERBASE", userbase)
prepend_path("PATH", pathJoin(userbase, "bin"))
__IDENTITY__
__CONDA__
__SETENV__
__PREPEND_PATH__
__FRONT_DOOR__
__DEPRECATED__
