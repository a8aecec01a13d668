"""Helpers shared by the tests, imported as ``support.<module>`` (tests/ is on sys.path: pytest puts the
directory of the top-level tests/conftest.py there).

- ``support.cluster``: the run's cluster state, host facts the local cluster changes, the pinned binaries.
- ``support.polling``: ``wait_for``, the one polling helper of integration and e2e tests.
- ``support.s3server``: a real S3 server on 127.0.0.1 for the store's tests (``s3_server``, ``s3_env``).
- ``support.e2e``: what the end-to-end tests read (status, conditions, events) and the pods they run.
- ``support.serve``: the inference server as a process on 127.0.0.1 (``Server``) and its RSS.
"""
