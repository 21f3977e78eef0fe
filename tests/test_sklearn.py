"""scikit-learn interop: fastdrop.sklearn estimators (check_estimator, Pipeline,
GridSearchCV, cross_val_score, labels, reproducibility, pickling)."""
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.datasets import make_blobs, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastdrop
from fastdrop.models import Sequential
from fastdrop.sklearn import DropoutMLPClassifier, DropoutMLPRegressor

# small networks and mini-batches keep the ~55 checks per estimator fast
SMALL = dict(hidden_layer_sizes=(32,), batch_size=16, epochs=10, learning_rate=1e-2)


@parametrize_with_checks([
    DropoutMLPClassifier(**SMALL),
    DropoutMLPRegressor(n_threads=1, **SMALL),
    DropoutMLPClassifier(early_stopping=True, input_dropout=0.1,
                         **{**SMALL, "hidden_layer_sizes": (32, 16)}),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=300, centers=3, n_features=6, cluster_std=2.0,
                      random_state=0)
    return x, y


def test_pipeline_with_scaler(blobs):
    x, y = blobs
    pipe = make_pipeline(StandardScaler(),
                         DropoutMLPClassifier(dropout=0.2, epochs=15, batch_size=32,
                                              random_state=0))
    assert pipe.fit(x, y) is pipe
    assert pipe.score(x, y) > 0.9
    assert pipe.predict_proba(x[:5]).shape == (5, 3)


def test_grid_search_over_dropout(blobs):
    x, y = blobs
    gs = GridSearchCV(DropoutMLPClassifier(epochs=10, batch_size=32, random_state=0),
                      {"dropout": [0.0, 0.3]}, cv=3)
    gs.fit(x, y)
    assert gs.best_params_["dropout"] in (0.0, 0.3)
    assert gs.best_score_ > 0.85
    assert gs.best_estimator_.model_ is not None
    assert gs.predict(x).shape == (300,)


def test_cross_val_score(blobs):
    x, y = blobs
    scores = cross_val_score(DropoutMLPClassifier(epochs=10, batch_size=32, random_state=0),
                             x, y, cv=3)
    assert scores.shape == (3,)
    assert scores.min() > 0.85


@pytest.mark.parametrize("labels", [
    np.array(["setosa", "versicolor", "virginica"]),
    np.array([3, 10, 42]),
    np.array([-1.0, 0.0, 7.0]),          # integral floats (sklearn semantics)
    np.array(["no", "yes"]),
])
def test_any_label_type(blobs, labels):
    x, y = blobs
    y = y % len(labels)
    yl = labels[y]
    clf = DropoutMLPClassifier(epochs=10, batch_size=32, random_state=0).fit(x, yl)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(x)
    assert pred.dtype == yl.dtype
    assert set(pred) <= set(labels)
    proba = clf.predict_proba(x)
    assert proba.shape == (len(x), len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    assert clf.score(x, yl) > 0.6
    assert clf.n_features_in_ == x.shape[1]


def test_random_state_reproducible(blobs):
    x, y = blobs
    kw = dict(epochs=3, batch_size=32)
    p1 = DropoutMLPClassifier(random_state=7, **kw).fit(x, y).predict_proba(x)
    p2 = DropoutMLPClassifier(random_state=7, **kw).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(p1, p2)
    # an int seed also gives the same result with another thread count
    p3 = DropoutMLPClassifier(random_state=7, n_threads=1, **kw).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(p1, p3)
    p4 = DropoutMLPClassifier(random_state=8, **kw).fit(x, y).predict_proba(x)
    assert not np.array_equal(p1, p4)
    # random_state=None: a fresh seed at every fit
    est = DropoutMLPClassifier(random_state=None, **kw)
    q1 = est.fit(x, y).predict_proba(x)
    q2 = est.fit(x, y).predict_proba(x)
    assert not np.array_equal(q1, q2)


def test_n_threads_applied_only_during_fit_and_predict(blobs):
    x, y = blobs
    old = fastdrop.get_num_threads()
    seen = []

    def spy(fn):
        def wrapper(*a, **k):
            seen.append(fastdrop.get_num_threads())
            return fn(*a, **k)
        return wrapper

    class Spy(DropoutMLPClassifier):
        def _build_model(self, *a, **k):
            model = super()._build_model(*a, **k)
            model.fit, model.predict = spy(model.fit), spy(model.predict)
            return model

    try:
        fastdrop.set_num_threads(2)
        clf = Spy(n_threads=1, epochs=1, random_state=0).fit(x, y)
        assert fastdrop.get_num_threads() == 2
        clf.predict(x)
        assert fastdrop.get_num_threads() == 2
        assert seen == [1, 1]
    finally:
        fastdrop.set_num_threads(old)


def test_pickle_and_clone(blobs):
    x, y = blobs
    clf = DropoutMLPClassifier(epochs=3, batch_size=32, random_state=0).fit(x, y)
    clf2 = pickle.loads(pickle.dumps(clf))
    assert isinstance(clf2.model_, Sequential)
    np.testing.assert_array_equal(clf.predict_proba(x), clf2.predict_proba(x))
    assert clf2.loss_curve_ == clf.loss_curve_
    fresh = clone(clf)
    with pytest.raises(NotFittedError):
        fresh.predict(x)
    assert fresh.get_params() == clf.get_params()


def test_model_structure_and_history(blobs):
    x, y = blobs
    clf = DropoutMLPClassifier(hidden_layer_sizes=(16, 8), dropout=(0.2, 0.0),
                               input_dropout=0.1, epochs=4, random_state=0).fit(x, y)
    kinds = [type(l).__name__ for l in clf.model_.layers]
    assert kinds == ["Dropout", "Dense", "Dropout", "Dense", "Dense"]
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    assert set(clf.history_) >= {"loss", "accuracy"}
    np.testing.assert_allclose(clf.model_.predict(x), clf.predict_proba(x), rtol=1e-6)


def test_early_stopping():
    x, y = make_classification(n_samples=200, n_features=20, n_informative=3,
                               random_state=0)
    clf = DropoutMLPClassifier(dropout=0.0, epochs=200, batch_size=16, learning_rate=1e-2,
                               early_stopping=True, n_iter_no_change=3,
                               validation_fraction=0.2, random_state=0).fit(x, y)
    assert clf.n_iter_ < 200                       # over-fitting stops it
    assert "val_loss" in clf.history_
    assert clf.best_validation_loss_ == pytest.approx(min(clf.history_["val_loss"]))


def test_invalid_inputs_and_params(blobs):
    import scipy.sparse as sp

    x, y = blobs
    bad_act = DropoutMLPClassifier(activation="tanh")       # __init__ does not validate
    with pytest.raises(ValueError, match="activation"):
        bad_act.fit(x, y)
    for params in ({"dropout": 1.0}, {"input_dropout": -0.1}, {"optimizer": "rmsprop"},
                   {"hidden_layer_sizes": (0,)}, {"dropout": (0.1, 0.2)}, {"epochs": 0}):
        with pytest.raises(ValueError):
            DropoutMLPClassifier(**params).fit(x, y)
    with pytest.raises(TypeError, match="[Ss]parse"):
        DropoutMLPClassifier(epochs=1).fit(sp.csr_matrix(x), y)
    xn = x.copy()
    xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DropoutMLPClassifier(epochs=1).fit(xn, y)
    with pytest.raises(ValueError, match="class"):
        DropoutMLPClassifier(epochs=1).fit(x, np.zeros(len(x)))
    with pytest.raises(ValueError, match="[Uu]nknown label type"):
        DropoutMLPClassifier(epochs=1).fit(x, np.linspace(0, 1, len(x)))


def test_fewer_samples_than_batch_and_int_input():
    x = np.array([[0, 0], [0, 1], [5, 5], [5, 6]])                  # int X, 4 samples
    y = np.array(["a", "a", "b", "b"])
    clf = DropoutMLPClassifier(dropout=0.0, epochs=30, learning_rate=1e-2,
                               random_state=0).fit(x, y)            # batch_size=128 > 4
    np.testing.assert_array_equal(clf.predict(x), y)


def test_regressor_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    w = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    y = 100.0 + 50.0 * (x @ w) + rng.normal(scale=5.0, size=600)   # unscaled targets
    reg = DropoutMLPRegressor(hidden_layer_sizes=(64,), dropout=0.1, epochs=30,
                              batch_size=32, random_state=0).fit(x, y)
    pred = reg.predict(x)
    assert pred.shape == (600,) and pred.dtype == np.float64
    assert reg.score(x, y) > 0.95
    # multi-output
    Y = np.column_stack([y, -0.01 * y + x[:, 0]])
    reg2 = DropoutMLPRegressor(hidden_layer_sizes=(64,), dropout=0.1, epochs=30,
                               batch_size=32, random_state=0).fit(x, Y)
    assert reg2.predict(x).shape == (600, 2)
    assert reg2.n_outputs_ == 2
    assert reg2.score(x, Y) > 0.9
    assert cross_val_score(reg, x, y, cv=3).min() > 0.9
