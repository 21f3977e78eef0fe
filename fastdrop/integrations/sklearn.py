"""scikit-learn estimators backed by fastdrop: ``DropoutMLPClassifier`` and
``DropoutMLPRegressor``.

They follow scikit-learn's estimator conventions (``get_params``/``set_params``, ``clone``,
``fit`` returning ``self``, input validation, ``random_state``, pickling) and so work in
``Pipeline``, ``GridSearchCV``, ``cross_val_score``, ... and pass
``sklearn.utils.estimator_checks.check_estimator``.

>>> from fastdrop.sklearn import DropoutMLPClassifier
>>> clf = DropoutMLPClassifier(hidden_layer_sizes=(512, 512), dropout=0.5, epochs=10,
...                            random_state=0).fit(x_train, y_train)
>>> clf.score(x_test, y_test)

The network is ``[Dropout(input_dropout)] -> (Dense(units, relu) -> Dropout(dropout))*
-> Dense(outputs)`` (a softmax output with sparse categorical cross-entropy for the
classifier, a linear output with mean squared error for the regressor), trained with
fastdrop's C kernels.  ``model_`` is the fitted ``fastdrop.models.Sequential``.

Requires scikit-learn (``pip install "fastdrop-engine[sklearn]"``); ``import fastdrop`` itself
never imports scikit-learn.
"""
import numbers
import os
import tempfile
import threading

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError as e:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastdrop.sklearn needs scikit-learn: pip install 'fastdrop-engine[sklearn]' "
                      "(or pip install scikit-learn)") from e
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

from .. import callbacks as _callbacks
from .. import layers as _layers
from .. import models as _models
from .. import optimizers as _optimizers
from .. import runtime as _runtime

__all__ = ["DropoutMLPClassifier", "DropoutMLPRegressor"]

_DTYPES = (np.float32, np.float64)
_OPTIMIZERS = ("adam", "adamw", "sgd")


# ----------------------------------------------------------------------- helpers
def _validate_data(est, X, y="no_validation", reset=True, **kw):
    """``validate_data`` (scikit-learn >= 1.6), ``BaseEstimator._validate_data``
    (1.3 - 1.5), or ``check_X_y``/``check_array`` plus ``n_features_in_`` by hand."""
    kw.setdefault("accept_sparse", False)
    kw.setdefault("dtype", _DTYPES)
    if _sk_validate_data is not None:
        if isinstance(y, str) and y == "no_validation":
            return _sk_validate_data(est, X, reset=reset, **kw)
        return _sk_validate_data(est, X, y, reset=reset, **kw)
    if hasattr(est, "_validate_data"):  # pragma: no cover - scikit-learn < 1.6
        if isinstance(y, str) and y == "no_validation":
            return est._validate_data(X, reset=reset, **kw)
        return est._validate_data(X, y, reset=reset, **kw)
    from sklearn.utils.validation import check_array, check_X_y  # pragma: no cover
    no_y = isinstance(y, str) and y == "no_validation"
    if no_y:  # pragma: no cover
        X = check_array(X, **{k: v for k, v in kw.items()
                              if k not in ("multi_output", "y_numeric")})
    else:  # pragma: no cover
        if y is None:
            raise ValueError(f"{type(est).__name__} requires y to be passed, but the "
                             "target y is None")
        X, y = check_X_y(X, y, **kw)
    if reset:  # pragma: no cover
        est.n_features_in_ = X.shape[1]
    elif X.shape[1] != est.n_features_in_:  # pragma: no cover
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is "
                         f"expecting {est.n_features_in_} features as input")
    return X if no_y else (X, y)


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = None


class _threads:
    """Apply ``n_threads`` with ``fastdrop.set_num_threads`` inside the block only.

    The setting is process-wide: when several estimators run concurrently in threads
    (joblib's threading backend, an in-process Dask cluster), the value from before the
    first block is restored when the last block exits.  Results do not depend on the
    thread count, so overlapping blocks only affect speed."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        global _threads_users, _threads_saved
        if self.n is not None:
            with _threads_lock:
                if _threads_users == 0:
                    _threads_saved = _runtime.get_num_threads()
                _threads_users += 1
                _runtime.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        global _threads_users
        if self.n is not None:
            with _threads_lock:
                _threads_users -= 1
                if _threads_users == 0:
                    _runtime.set_num_threads(_threads_saved)
        return False


def _rate(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) \
            or not (0.0 <= float(v) < 1.0):
        raise ValueError(f"{name} must be a float in [0, 1), got {v!r}")
    return float(v)


def _pos_int(v, name, minimum=1):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _model_to_bytes(model):
    with tempfile.TemporaryDirectory(prefix="fastdrop-") as d:
        path = os.path.join(d, "model.fdm")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def _model_from_bytes(data):
    with tempfile.TemporaryDirectory(prefix="fastdrop-") as d:
        path = os.path.join(d, "model.fdm")
        with open(path, "wb") as f:
            f.write(data)
        return _models.load_model(path)


# -------------------------------------------------------------------- base class
class _BaseDropoutMLP(BaseEstimator):
    """Shared implementation; see ``DropoutMLPClassifier`` for the parameters."""

    _loss = None           # set by subclasses
    _output_activation = None

    def __init__(self, hidden_layer_sizes=(256,), dropout=0.5, input_dropout=0.0,
                 activation="relu", optimizer="adam", learning_rate=1e-3, batch_size=128,
                 epochs=20, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, random_state=None, n_threads=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    # ------------------------------------------------------------------ params
    def _check_params(self):
        """Validate the hyper-parameters (in ``fit``, never in ``__init__``)."""
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes must be a tuple of positive integers, got "
                             f"{self.hidden_layer_sizes!r}") from None
        sizes = tuple(_pos_int(s, "hidden_layer_sizes entries") for s in sizes)
        if isinstance(self.dropout, numbers.Real) or isinstance(self.dropout, (bool, np.bool_)):
            rates = (_rate(self.dropout, "dropout"),) * len(sizes)
        else:
            try:
                rates = tuple(_rate(r, "dropout") for r in self.dropout)
            except TypeError:
                raise ValueError(f"dropout must be a float in [0, 1) or one rate per hidden "
                                 f"layer, got {self.dropout!r}") from None
            if len(rates) != len(sizes):
                raise ValueError(f"dropout has {len(rates)} rates for {len(sizes)} hidden "
                                 f"layers")
        input_rate = _rate(self.input_dropout, "input_dropout")
        if self.activation != "relu":
            raise ValueError(f"activation must be 'relu' (the only activation supported for "
                             f"now), got {self.activation!r}")
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        lr = self.learning_rate
        if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) \
                or not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {lr!r}")
        _pos_int(self.batch_size, "batch_size")
        _pos_int(self.epochs, "epochs")
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping must be a bool, got {self.early_stopping!r}")
        vf = self.validation_fraction
        if isinstance(vf, (bool, np.bool_)) or not isinstance(vf, numbers.Real) \
                or not (0.0 < vf < 1.0):
            raise ValueError(f"validation_fraction must be in (0, 1), got {vf!r}")
        _pos_int(self.n_iter_no_change, "n_iter_no_change")
        if self.n_threads is not None:
            _pos_int(self.n_threads, "n_threads")
        if self.verbose not in (0, 1, 2) and not isinstance(self.verbose, (bool, np.bool_)):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        return sizes, rates, input_rate

    def _make_optimizer(self):
        cls = {"adam": _optimizers.Adam, "adamw": _optimizers.AdamW,
               "sgd": _optimizers.SGD}[self.optimizer.lower()]
        return cls(learning_rate=float(self.learning_rate))

    def _build_model(self, n_features, n_outputs, seed, sizes, rates, input_rate):
        model = _models.Sequential(seed=seed, name=type(self).__name__)
        if input_rate > 0:
            model.add(_layers.Dropout(input_rate))
        dim = n_features
        for units, rate in zip(sizes, rates):
            model.add(_layers.Dense(units, activation="relu", input_dim=dim,
                                    kernel_initializer="he_uniform"))
            if rate > 0:
                model.add(_layers.Dropout(rate))
            dim = None
        model.add(_layers.Dense(n_outputs, activation=self._output_activation,
                                input_dim=dim))
        model.compile(optimizer=self._make_optimizer(), loss=self._loss,
                      metrics=["accuracy"] if self._loss != "mse" else None)
        return model

    # --------------------------------------------------------------------- fit
    def _split_validation(self, X, t, seed, stratify):
        """A shuffled (stratified for classifiers, when every class has 2+ samples) split
        of ``validation_fraction`` of the data for early stopping."""
        n = X.shape[0]
        n_val = int(round(n * self.validation_fraction))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"early_stopping with validation_fraction="
                             f"{self.validation_fraction} leaves no training or no validation "
                             f"samples for n_samples={n}")
        from sklearn.model_selection import train_test_split
        if stratify is not None:
            counts = np.bincount(stratify)
            n_cls = np.count_nonzero(counts)
            if counts[counts > 0].min() < 2 or n_val < n_cls or n - n_val < n_cls:
                stratify = None
        xt, xv, tt, tv = train_test_split(X, t, test_size=n_val, random_state=seed,
                                          stratify=stratify)
        return xt, tt, xv, tv

    def _fit(self, X, t, n_outputs, stratify=None):
        sizes, rates, input_rate = self._check_params()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        model = self._build_model(X.shape[1], n_outputs, seed, sizes, rates, input_rate)
        verbose = int(self.verbose)
        with _threads(self.n_threads):
            if self.early_stopping:
                xt, tt, xv, tv = self._split_validation(X, t, seed, stratify)
                es = _callbacks.EarlyStopping(monitor="val_loss",
                                              patience=int(self.n_iter_no_change),
                                              restore_best_weights=True)
                hist = model.fit(xt, tt, batch_size=int(self.batch_size),
                                 epochs=int(self.epochs), verbose=verbose,
                                 validation_data=(xv, tv), callbacks=[es])
                # keep the best epoch's weights even when training ran all epochs
                if es.best_weights is not None and \
                        es.best_epoch != (hist.epoch[-1] if hist.epoch else 0):
                    model.set_weights(es.best_weights)
                self.best_validation_loss_ = float(es.best)
            else:
                hist = model.fit(X, t, batch_size=int(self.batch_size),
                                 epochs=int(self.epochs), verbose=verbose)
        self.model_ = model
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        self.loss_curve_ = list(self.history_.get("loss", []))
        self.n_iter_ = len(hist.epoch)
        return self

    def _predict_raw(self, X):
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False)
        with _threads(self.n_threads):
            return self.model_.predict(X)

    # ---------------------------------------------------------------- pickling
    def __getstate__(self):
        state = super().__getstate__()
        if "model_" in state:
            state = dict(state)
            state["model_"] = _SavedModel(_model_to_bytes(state["model_"]))
        return state

    def __setstate__(self, state):
        model = state.get("model_")
        if isinstance(model, _SavedModel):
            state = dict(state)
            state["model_"] = _model_from_bytes(model.data)
        super().__setstate__(state)


class _SavedModel:
    """A fastdrop model serialised with ``Sequential.save`` (bytes of the model file)."""

    def __init__(self, data):
        self.data = data


# ------------------------------------------------------------------- classifier
class DropoutMLPClassifier(ClassifierMixin, _BaseDropoutMLP):
    """Multi-layer perceptron classifier with dropout, trained by fastdrop.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(256,)
        Units of each hidden ReLU layer (``()`` gives a softmax regression).
    dropout : float or tuple of float, default=0.5
        Dropout rate after each hidden layer (one rate for all, or one per layer).
    input_dropout : float, default=0.0
        Dropout rate on the input features.
    activation : {'relu'}, default='relu'
        Hidden activation (only ReLU is supported for now).
    optimizer : {'adam', 'adamw', 'sgd'}, default='adam'
    learning_rate : float, default=1e-3
    batch_size : int, default=128
        Mini-batch size (the whole set when there are fewer samples).
    epochs : int, default=20
        Maximum number of passes over the training data.
    early_stopping : bool, default=False
        Hold out a shuffled, stratified ``validation_fraction`` of the training data,
        stop when its loss has not improved for ``n_iter_no_change`` epochs
        (``fastdrop.callbacks.EarlyStopping`` on ``val_loss``) and keep the weights of the
        best epoch.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    random_state : None, int or numpy RandomState, default=None
        Seeds weight initialisation, shuffling, dropout masks and the validation split.
        None gives a fresh seed at each ``fit``; an int makes ``fit`` reproducible
        (bitwise identical predictions, for any thread count).
    n_threads : int or None, default=None
        Threads for fastdrop's kernels during ``fit``/``predict`` (set with
        ``fastdrop.set_num_threads`` and restored afterwards); None keeps the current
        setting.
    verbose : {0, 1, 2}, default=0
        Progress output of ``Sequential.fit``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted class labels (as ``LabelEncoder``); any label type.
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when fitted on a DataFrame with string columns)
    model_ : fastdrop.models.Sequential
        The fitted network; it predicts class probabilities in ``classes_`` order.
    history_ : dict of lists
        Per-epoch ``loss`` and ``accuracy`` (and ``val_loss``/``val_accuracy`` with early
        stopping).
    loss_curve_ : list of float
        Training loss per epoch.
    n_iter_ : int
        Epochs actually run.
    best_validation_loss_ : float
        Best validation loss (only with ``early_stopping=True``).
    """

    _loss = "sparse_categorical_crossentropy"
    _output_activation = "softmax"

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,)."""
        X, y = _validate_data(self, X, y)
        check_classification_targets(y)
        from sklearn.preprocessing import LabelEncoder
        enc = LabelEncoder().fit(y)
        classes = enc.classes_
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes "
                             f"in y, but y contains only one class: {classes[0]!r}")
        yi = enc.transform(y).astype(np.int64)
        self.classes_ = classes
        return self._fit(X, yi, len(classes), stratify=yi)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order."""
        p = self._predict_raw(X).astype(np.float64)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def predict_log_proba(self, X):
        """Log of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted labels (values of ``classes_``)."""
        proba = self.predict_proba(X)      # checks that the estimator is fitted first
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": False, "allow_nan": False}


# -------------------------------------------------------------------- regressor
class DropoutMLPRegressor(RegressorMixin, _BaseDropoutMLP):
    """Multi-layer perceptron regressor with dropout, trained by fastdrop (mean squared
    error, linear output).  Same parameters as ``DropoutMLPClassifier``.

    ``y`` may be 1-D (predictions are 1-D) or 2-D multi-output (predictions keep its
    shape).  Targets are standardised internally (per output: mean 0, variance 1) for
    training, and predictions are mapped back, so ``model_`` predicts standardised
    targets: ``y = model_.predict(X) * y_scale_ + y_mean_``.  ``score`` is R².

    Attributes: ``n_features_in_``, ``n_outputs_``, ``y_mean_``, ``y_scale_``, ``model_``,
    ``history_``, ``loss_curve_``, ``n_iter_`` (and ``best_validation_loss_`` with early
    stopping).
    """

    _loss = "mse"
    _output_activation = None

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and targets ``y`` (n_samples,) or
        (n_samples, n_outputs)."""
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        mean = y2.mean(axis=0)
        scale = y2.std(axis=0)
        scale[~(scale > np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0))] = 1.0
        t = ((y2 - mean) / scale).astype(np.float32)
        self.n_outputs_ = y2.shape[1]
        self.y_mean_ = mean
        self.y_scale_ = scale
        return self._fit(X, t, y2.shape[1])

    def predict(self, X):
        """Predicted targets, float64, shaped like the ``y`` given to ``fit``."""
        out = self._predict_raw(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True, "allow_nan": False}
