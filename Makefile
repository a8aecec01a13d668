# Kubeloop — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER := $(PYTHON) cluster/localcluster.py
export KUBECONFIG ?= $(CURDIR)/.kube/config

##@ Getting started (the README's two commands)
.PHONY: demo test
demo: venv cluster-up images install samples ## Run the whole loop: local cluster, images, operator installed by Helm, samples applied
	@$(CLUSTER) status

test: venv host-deps ## Run every test: unit, then integration and e2e against the local cluster (set up by itself)
	$(VENV)/bin/pytest -ra

##@ Development
.PHONY: venv
venv: $(VENV)/.installed ## Create the virtual environment with every dependency
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

##@ Local cluster
.PHONY: host-deps cluster-up cluster-up-control-plane cluster-down cluster-status images
host-deps: ## Install the Debian packages the local cluster needs (containerd, runc, CNI plugins, podman, ...)
	cluster/install-host-deps.sh
cluster-up: host-deps ## Start the local single-node cluster (idempotent)
	$(CLUSTER) up
cluster-up-control-plane: host-deps ## Start only the control plane (fast, API-only)
	$(CLUSTER) up --control-plane-only
cluster-down: ## Stop the local cluster and remove everything it made
	$(CLUSTER) down
cluster-status: ## Show what is running
	$(CLUSTER) status
images: host-deps ## Build the operator, trainer and server images and import them into the local node
	cluster/build-images.sh --import

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z_-]+:.*##/ {printf "  %-26s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
