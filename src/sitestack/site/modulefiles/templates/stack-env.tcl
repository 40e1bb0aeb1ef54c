pushenv SITESTACK_STACK __REF__
pushenv SITESTACK_PREFIX $prefix
pushenv SITESTACK_STACK_ROOT __ROOT__
prepend-path JUPYTER_PATH [file join __ROOT__ share jupyter]
