-- A clone is not the stack: SITESTACK_CLONE instead of the SITESTACK_* of a site stack.
pushenv("SITESTACK_CLONE", prefix)
