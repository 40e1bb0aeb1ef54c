# Kept: put back on unload to their value at load, whatever an activation changed since
# (pushenv on unload must name the very value it pushed, from Environment Modules' record).
foreach var [list __KEEP__] {
    if {[module-info mode load]} {
        if {[info exists ::env($var)]} {
            pushenv $var $::env($var)
        }
    } elseif {[module-info mode unload] && [info exists ::env(__MODULES_PUSHENV_$var)]} {
        set pushed "[module-info name]&"
        foreach entry [split $::env(__MODULES_PUSHENV_$var) :] {
            if {[string first $pushed $entry] == 0} {
                pushenv $var [string range $entry [string length $pushed] end]
                break
            }
        }
    }
}
