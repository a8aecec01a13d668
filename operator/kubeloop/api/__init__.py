"""The Kubeloop API: pydantic models of the four kinds (group kubeloop.io, version v1alpha1).

The CRDs in crds/ are generated from these models (python -m kubeloop.api.crdgen); never edit them by hand.
"""

from kubeloop.api.common import API_VERSION, GROUP, VERSION, Condition, Kind
from kubeloop.api.dataset import DATASET, DatasetSpec, DatasetStatus
from kubeloop.api.modeldeployment import MODEL_DEPLOYMENT, ModelDeploymentSpec, ModelDeploymentStatus
from kubeloop.api.monitor import MONITOR, MonitorSpec, MonitorStatus
from kubeloop.api.trainingjob import TRAINING_JOB, TrainingJobSpec, TrainingJobStatus

KINDS: tuple[Kind, ...] = (DATASET, TRAINING_JOB, MODEL_DEPLOYMENT, MONITOR)

__all__ = [
    "API_VERSION",
    "DATASET",
    "GROUP",
    "KINDS",
    "MODEL_DEPLOYMENT",
    "MONITOR",
    "TRAINING_JOB",
    "VERSION",
    "Condition",
    "DatasetSpec",
    "DatasetStatus",
    "Kind",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "MonitorSpec",
    "MonitorStatus",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
