"""`kubectl kubeloop`: a kubectl plugin for the four kinds, written against the Kubernetes API only.

It reads and annotates the custom resources through the API server (and reaches the inference service
through the API server's service proxy), so it works from any machine with a kubeconfig. It never imports
the operator: the only project modules it may use are kubeloop.api and kubeloop.contract (an import-linter
contract says so).
"""
