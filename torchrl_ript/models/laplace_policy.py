"""Deprecated name of :mod:`torchrl_ript.models.regression_policy` (it also builds
Gaussian heads, hence the rename). Importing it warns; it will be removed."""
import warnings

from torchrl_ript.models.regression_policy import *  # noqa: F401,F403
from torchrl_ript.models.regression_policy import __all__  # noqa: F401

warnings.warn(
    "torchrl_ript.models.laplace_policy is deprecated: import from "
    "torchrl_ript.models.regression_policy instead.",
    DeprecationWarning,
    stacklevel=2,
)
