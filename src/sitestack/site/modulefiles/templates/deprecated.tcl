if {[module-info mode load]} {
    puts stderr __MESSAGE__
}
