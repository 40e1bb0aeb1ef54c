#%Module1.0
# __HEADER__
__DEFAULT__
__HIDDEN__
