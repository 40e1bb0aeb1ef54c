-- Unload also takes back what the conda front door added since load (an environment may be
-- active still): the absolute PATH entries and the conda variables it lists; setenv on
-- unload unsets.
if (mode() == "unload") then
  for entry in (os.getenv(__PATHS__) or ""):gmatch("[^:]+") do
    if (entry:sub(1, 1) == "/") then
      remove_path("PATH", entry)
    end
  end
  for name in (os.getenv(__UNSET__) or ""):gmatch("%S+") do
    if (name:match("^CONDA_[A-Z0-9_]+$") or name == "VIRTUAL_ENV" or name == "SITESTACK_CLONE") then
      setenv(name, "")
    end
  end
  for _, var in ipairs({__STATE__, __PATHS__, __UNSET__}) do
    setenv(var, "")
  end
end
