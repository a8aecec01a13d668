"""python -m kubeloop.cli: the same as the kubectl-kubeloop command."""

import sys

from kubeloop.cli.main import main

sys.exit(main())
