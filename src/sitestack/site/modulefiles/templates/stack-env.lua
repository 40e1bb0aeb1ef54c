pushenv("SITESTACK_STACK", __REF__)
pushenv("SITESTACK_PREFIX", prefix)
pushenv("SITESTACK_STACK_ROOT", __ROOT__)
prepend_path("JUPYTER_PATH", pathJoin(__ROOT__, "share", "jupyter"))
