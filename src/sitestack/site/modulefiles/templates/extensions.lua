-- One argument per line: spider lists each as NAME/VERSION (E), provided by this module.
extensions(
__NAMES__
)
