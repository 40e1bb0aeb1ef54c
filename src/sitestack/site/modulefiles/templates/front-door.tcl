# Unload also takes back what the conda front door added since load (an environment may be
# active still): the absolute PATH entries and the conda variables it lists.
if {[module-info mode unload]} {
    set paths __PATHS__
    set names __UNSET__
    if {[info exists ::env($paths)]} {
        foreach entry [split $::env($paths) :] {
            if {[string index $entry 0] eq "/"} {
                remove-path --remove-on-unload PATH $entry
            }
        }
    }
    if {[info exists ::env($names)]} {
        foreach name [regexp -all -inline {\S+} $::env($names)] {
            if {[regexp {^(CONDA_[A-Z0-9_]+|VIRTUAL_ENV|SITESTACK_CLONE)$} $name]} {
                unsetenv --unset-on-unload $name
            }
        }
    }
    foreach var [list __STATE__ $paths $names] {
        unsetenv --unset-on-unload $var
    }
}
