-- Kept: put back on unload to their value at load, whatever an activation changed since.
for _, var in ipairs({__KEEP__}) do
  pushenv(var, os.getenv(var) or false)
end
