if (mode() == "load") then
  LmodMessage(__MESSAGE__)
end
