-- __HEADER__
whatis(__WHATIS__)
if (mode() == "load") then
  -- LmodError aborts the load with a non-zero status.
  LmodError(__REASON__)
end
