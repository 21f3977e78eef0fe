"""scikit-learn estimators (public path; the code lives in ``fastdrop.integrations.sklearn``)."""
from .integrations.sklearn import *  # noqa: F401,F403
from .integrations.sklearn import DropoutMLPClassifier, DropoutMLPRegressor  # noqa: F401
