"""Code that runs in Kubeloop's pods (ingest, train, serve, fetch); it never imports the operator.

Entry point: ``python -m kubeloop.runtime <command> ...`` (see :mod:`kubeloop.runtime.__main__`).
"""
