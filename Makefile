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
demo: cluster-up ## Run the whole loop: local cluster, operator by Helm, samples, traffic, drift, retrain, canary, promotion
	$(PYTHON) cluster/demo.py

test: venv host-deps lint binaries ## Lint, then every test: unit, integration and e2e on a real local Kubernetes (set up by itself)
	$(VENV)/bin/pytest -ra

##@ Tests, one layer at a time (make test runs lint and all three)
# A cluster the tests start is torn down, and checked to leave nothing behind, by tests/e2e/test_zz_teardown.py;
# test-integration runs it too (it skips when the run reused a cluster it did not start).
.PHONY: test-unit test-integration test-e2e
test-unit: venv ## Unit tests only (tests/unit): no cluster, no host packages
	$(VENV)/bin/pytest -ra tests/unit

test-integration: venv host-deps binaries ## Integration tests (tests/integration) against a real API server (started if none answers)
	$(VENV)/bin/pytest -ra tests/integration tests/e2e/test_zz_teardown.py

test-e2e: venv host-deps binaries ## End-to-end tests (tests/e2e) on a real node: images built, operator installed by Helm
	$(VENV)/bin/pytest -ra tests/e2e

##@ Development
.PHONY: venv
venv: $(VENV)/.installed ## Create the virtual environment with every dependency
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

.PHONY: constraints
constraints: ## Re-resolve the newest dependencies and pin them in constraints.txt
	rm -rf .work/resolve && $(PYTHON) -m venv .work/resolve && .work/resolve/bin/pip install -q --upgrade pip
	.work/resolve/bin/pip install -q -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; .work/resolve/bin/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.new
	mv constraints.new constraints.txt

##@ Local cluster
.PHONY: binaries host-deps cluster-up cluster-up-control-plane cluster-down cluster-status images
binaries: ## Build (once, cached under ~/.cache/kubeloop) the pinned Kubernetes, etcd, Helm and CoreDNS binaries
	cluster/build-binaries.sh
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
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-26s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ API and operator
HELM ?= $(firstword $(wildcard $(HOME)/.cache/kubeloop/bin/*/helm) helm)
.PHONY: generate lint manifests helm-lint run-operator
generate: venv ## Generate crds/ from the API models and copy them into the Helm chart
	$(PY) -m kubeloop.api.crdgen crds helm/kubeloop/crds

manifests: ## Render the plain install YAML (manifests/install.yaml) from the Helm chart
	{ printf '# Plain install: kubectl apply -f crds/ -f manifests/install.yaml (rendered from helm/kubeloop by make manifests).\n'; \
	  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kubeloop-system\n---\n'; \
	  $(HELM) template kubeloop helm/kubeloop --namespace kubeloop-system --kube-version 1.34.0 --skip-crds --skip-tests \
	  | sed '/^# Source:/d'; } > manifests/install.yaml

lint: venv ## Lint: ruff, mypy --strict on the whole package (operator and runtime), import-layer contracts
	$(VENV)/bin/ruff check --no-cache operator tests cluster bench docker
	$(VENV)/bin/ruff format --no-cache --check operator/kubeloop
	$(VENV)/bin/mypy --strict operator/kubeloop
	$(VENV)/bin/lint-imports
	@# pytest refuses two test modules of one basename (tests/*/ have no __init__.py): say so before it does
	@dups=$$(find tests -name 'test_*.py' -printf '%f\n' | sort | uniq -d); \
	if [ -n "$$dups" ]; then echo "test modules with the same basename in two folders: $$dups"; exit 1; fi

helm-lint: ## helm lint the chart
	$(HELM) lint helm/kubeloop

run-operator: venv ## Run the operator locally against $$KUBECONFIG
	$(VENV)/bin/kopf run --standalone --all-namespaces -m kubeloop.controllers.main

##@ kind (a laptop or hosted CI with Docker)
KIND_CLUSTER ?= kubeloop
.PHONY: kind-up kind-images
kind-up: ## Create a kind cluster and point KUBECONFIG at it (needs Docker and kind)
	kind create cluster --name $(KIND_CLUSTER) --kubeconfig $(CURDIR)/.kube/kind-config
	@echo "export KUBECONFIG=$(CURDIR)/.kube/kind-config"
kind-images: ## Build the images with Docker and load them into the kind cluster
	for t in operator trainer server; do \
	  docker build --target $$t -t kubeloop.local/$$t:dev . && kind load docker-image --name $(KIND_CLUSTER) kubeloop.local/$$t:dev; \
	done
