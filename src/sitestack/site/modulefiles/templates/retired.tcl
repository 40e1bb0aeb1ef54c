#%Module1.0
# __HEADER__
module-whatis __WHATIS__
if {[module-info mode load]} {
    puts stderr __REASON__
    # Environment Modules: break aborts the load and `module load` fails.
    break
}
