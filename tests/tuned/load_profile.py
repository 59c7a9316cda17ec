"""Load TuneD profiles with TuneD's own loader and merger; print the merged units as JSON.

Run by the system python3 of a host with Debian's `tuned` package (tests/test_tuned.py):
    /usr/bin/python3 tests/tuned/load_profile.py DIR[:DIR...] NAME [NAME...]
DIRs are TuneD's load directories, the later ones searched first (as consts.LOAD_DIRECTORIES).
Only the profile code runs: no daemon, no D-Bus, no plugin touches the host.
"""

import json
import sys

import tuned.profiles as profiles
from tuned.profiles.variables import Variables
from tuned.utils.global_config import GlobalConfig

directories, names = sys.argv[1].split(":"), sys.argv[2:]
loader = profiles.Loader(profiles.Locator(directories), profiles.Factory(), profiles.Merger(),
                         GlobalConfig(), Variables())
merged = loader.load(names)
json.dump({name: {"type": unit.type, "enabled": unit.enabled, "options": dict(unit.options),
                  "cpuinfo_regex": unit.cpuinfo_regex, "uname_regex": unit.uname_regex}
           for name, unit in merged.units.items()}, sys.stdout)
