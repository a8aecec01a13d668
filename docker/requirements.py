"""Print the requirements of one image from pyproject.toml: the base dependencies plus one extra.

Used by the Dockerfile to install dependencies in a layer of their own, before the project's code.
    python3 requirements.py [EXTRA]
"""

import sys
import tomllib

with open("pyproject.toml", "rb") as pyproject:
    project = tomllib.load(pyproject)["project"]
extra = sys.argv[1] if len(sys.argv) > 1 else ""
print("\n".join(project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])))
