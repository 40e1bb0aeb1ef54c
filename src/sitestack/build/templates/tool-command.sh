#!/bin/sh
# Written by sitestack build: the site's own sitestack, run by its own Python whatever stack
# is loaded; -I: no user site and no PYTHON* variables from the shell.
exec __PYTHON__ -I -m sitestack__ARGS__ "$@"
