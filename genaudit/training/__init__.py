"""The training side: what a training loop uses, never the audit itself (``import genaudit`` loads none of it).

`monitor` holds `AuditMonitor`, label-free early stopping for a model in training; `regularizers` holds AL2 and
NSR, the feature-layer regularizers the diagnostics come from, as ``torch.nn.Module``s. Both need torch.
"""

from genaudit.training.monitor import AuditMonitor

__all__ = ["AuditMonitor"]
