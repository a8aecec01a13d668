"""Kubeloop: a Kubernetes-native MLOps operator."""
