"""Published values of the PSA paper's gradient-accuracy figures, as data (``docs/protocols.md#published-values``).

Source: A. Shekhovtsov, V. Yanush, B. Flach, *Path Sample-Analytic Gradient Estimators for
Stochastic Binary Networks*, NeurIPS 2020, arXiv:2006.03143 — the per-layer figures of relative
RMSE and mean cosine similarity against the number of averaged draws M, for the 2-5-5-5 network at
checkpoints chk-100 and chk-2000. The numbers were **read off the published figures** (reading
accuracy about 1%; the M = 9000 column rests on 2 trials and is noisy); ``docs/protocols.md``
lists them under *published values*.  A re-trained network differs from the published one, so a
run is expected to agree qualitatively, not to the digit.

Layout: ``VALUES[(checkpoint, metric)][method]`` is a 4-tuple over the groups ``GROUPS`` (layer 0
= first hidden, layer 1, layer 2 = last hidden, head = "layer 3" in the paper), each a tuple over
``M_GRID[metric]``. ``METHOD_SPECS`` maps the paper's method names to sbn-bench estimator specs.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["VALUES", "M_GRID", "GROUPS", "METHODS", "METHOD_SPECS", "CHECKPOINTS", "PROBLEM_PREFIX", "CITATION", "paper_table"]

CITATION = ("Shekhovtsov, Yanush, Flach. Path Sample-Analytic Gradient Estimators for Stochastic Binary "
            "Networks. NeurIPS 2020, arXiv:2006.03143 (values read off the figures, about 1% accuracy)")
PROBLEM_PREFIX = "psa-2-5-5-5@"
CHECKPOINTS = ("chk-100", "chk-2000")
GROUPS = ("layer0", "layer1", "layer2", "head")
M_GRID = {"rel_rmse": (1, 10, 100, 1000, 9000), "cos_mean": (1, 10, 100, 9000)}
# The figures' legend order (``docs/protocols.md#psa2020``), with ARM appended last as in the paper.
#: each method as the registered estimator and the options that define it: a task is the method
#: when its estimator name matches and its stored options include these (options stored in full)
METHODS: dict[str, tuple[str, dict]] = {
    "REINFORCE": ("reinforce", {"baseline": "none"}),
    "Concrete-t=0.1": ("concrete", {"tau": 0.1}),
    "Concrete-t=1": ("concrete", {"tau": 1.0}),
    "tanh": ("tanh", {}),
    "ST": ("st", {}),
    "PSA": ("psa", {"head": "flip-mixed"}),  # the paper's PSA: the authors' code mixes the head with its flips
    "ARM": ("arm", {"shared": False}),
}
#: the spec each method is run with (the psa2020 sweep; the paper table's "estimator" column)
METHOD_SPECS = {
    "REINFORCE": "reinforce",
    "Concrete-t=0.1": "concrete:tau=0.1",
    "Concrete-t=1": "concrete",
    "tanh": "tanh",
    "ST": "st",
    "PSA": "psa:head=flip-mixed",
    "ARM": "arm",
}

VALUES: dict[tuple[str, str], dict[str, tuple[tuple[float, ...], ...]]] = {
    ('chk-100', 'rel_rmse'): {
        'REINFORCE': (
            (13.8, 4.38, 1.38, 0.448, 0.163),
            (11.2, 3.56, 1.17, 0.354, 0.102),
            (6.78, 2.16, 0.67, 0.2, 0.0724),
            (0.449, 0.142, 0.0453, 0.0131, 0.00516),
        ),
        'ARM': (
            (2.32, 0.731, 0.236, 0.0717, 0.0208),
            (2.54, 0.802, 0.254, 0.0855, 0.0275),
            (1.81, 0.57, 0.181, 0.0571, 0.0191),
            (0.451, 0.145, 0.0449, 0.0142, 0.00544),
        ),
        'Concrete-t=0.1': (
            (7.74, 2.43, 0.753, 0.253, 0.0908),
            (5.43, 1.73, 0.554, 0.182, 0.1),
            (2.06, 0.662, 0.225, 0.0933, 0.0647),
            (0.425, 0.138, 0.0508, 0.0314, 0.0304),
        ),
        'Concrete-t=1': (
            (0.395, 0.311, 0.301, 0.3, 0.3),
            (0.543, 0.359, 0.335, 0.332, 0.331),
            (0.549, 0.295, 0.257, 0.252, 0.252),
            (0.321, 0.156, 0.127, 0.124, 0.124),
        ),
        'tanh': (
            (0.248, 0.248, 0.248, 0.248, 0.248),
            (0.415, 0.415, 0.415, 0.415, 0.415),
            (0.485, 0.485, 0.485, 0.485, 0.485),
            (0.331, 0.331, 0.331, 0.331, 0.331),
        ),
        'ST': (
            (0.222, 0.103, 0.081, 0.0786, 0.0783),
            (0.563, 0.363, 0.336, 0.334, 0.334),
            (0.568, 0.382, 0.359, 0.356, 0.356),
            (0.449, 0.142, 0.0448, 0.0142, 0.00463),
        ),
        'PSA': (
            (0.158, 0.0676, 0.0502, 0.0481, 0.0478),
            (0.381, 0.125, 0.0465, 0.0301, 0.0277),
            (0.436, 0.139, 0.0417, 0.0118, 0.00241),
            (0.38, 0.12, 0.0358, 0.0111, 0.0045),
        ),
    },
    ('chk-100', 'cos_mean'): {
        'REINFORCE': (
            (0.0746, 0.234, 0.596, 0.991),
            (0.0895, 0.264, 0.663, 0.996),
            (0.147, 0.418, 0.842, 0.995),
            (0.924, 0.991, 0.999, 1.0),
        ),
        'ARM': (
            (0.392, 0.809, 0.976, 1.0),
            (0.36, 0.786, 0.97, 1.0),
            (0.48, 0.88, 0.987, 1.0),
            (0.924, 0.992, 0.999, 1.0),
        ),
        'Concrete-t=0.1': (
            (0.145, 0.384, 0.793, 0.996),
            (0.188, 0.504, 0.893, 0.998),
            (0.421, 0.862, 0.988, 0.999),
            (0.931, 0.992, 0.999, 1.0),
        ),
        'Concrete-t=1': (
            (0.934, 0.974, 0.978, 0.978),
            (0.852, 0.942, 0.952, 0.953),
            (0.858, 0.969, 0.978, 0.979),
            (0.958, 0.989, 0.992, 0.992),
        ),
        'tanh': (
            (0.995, 0.995, 0.995, 0.995),
            (0.911, 0.911, 0.911, 0.911),
            (0.938, 0.938, 0.938, 0.938),
            (0.953, 0.953, 0.953, 0.953),
        ),
        'ST': (
            (0.984, 0.996, 0.997, 0.997),
            (0.925, 0.967, 0.971, 0.971),
            (0.959, 0.985, 0.987, 0.987),
            (0.923, 0.992, 0.999, 1.0),
        ),
        'PSA': (
            (0.991, 0.998, 0.999, 0.999),
            (0.942, 0.994, 0.999, 1.0),
            (0.945, 0.996, 1.0, 1.0),
            (0.944, 0.994, 0.999, 1.0),
        ),
    },
    ('chk-2000', 'rel_rmse'): {
        'REINFORCE': (
            (9.21, 2.92, 0.92, 0.289, 0.105),
            (19.5, 6.11, 1.89, 0.593, 0.208),
            (9.97, 3.17, 1.02, 0.322, 0.115),
            (0.423, 0.133, 0.042, 0.0136, 0.0058),
        ),
        'ARM': (
            (5.89, 1.88, 0.587, 0.17, 0.0539),
            (13.1, 4.15, 1.32, 0.414, 0.115),
            (7.8, 2.45, 0.776, 0.27, 0.085),
            (0.424, 0.135, 0.0429, 0.0162, 0.00244),
        ),
        'Concrete-t=0.1': (
            (113.0, 35.9, 11.3, 3.55, 1.4),
            (58.8, 18.7, 6.02, 1.9, 0.562),
            (9.14, 2.88, 0.921, 0.272, 0.104),
            (0.41, 0.129, 0.0461, 0.0237, 0.0177),
        ),
        'Concrete-t=1': (
            (3.74, 1.75, 1.41, 1.37, 1.36),
            (5.73, 2.97, 2.54, 2.5, 2.49),
            (3.03, 1.27, 0.936, 0.898, 0.894),
            (0.374, 0.193, 0.165, 0.162, 0.161),
        ),
        'tanh': (
            (8.21, 8.21, 8.21, 8.21, 8.21),
            (10.6, 10.6, 10.6, 10.6, 10.6),
            (3.92, 3.92, 3.92, 3.92, 3.92),
            (0.205, 0.205, 0.205, 0.205, 0.205),
        ),
        'ST': (
            (2.63, 0.979, 0.61, 0.565, 0.556),
            (4.43, 1.58, 0.885, 0.794, 0.774),
            (2.71, 1.18, 0.892, 0.859, 0.852),
            (0.424, 0.132, 0.0414, 0.0146, 0.00487),
        ),
        'PSA': (
            (1.86, 0.625, 0.28, 0.22, 0.212),
            (3.64, 1.15, 0.38, 0.172, 0.126),
            (2.37, 0.742, 0.233, 0.0709, 0.0328),
            (0.413, 0.132, 0.0435, 0.0134, 0.00341),
        ),
    },
    ('chk-2000', 'cos_mean'): {
        'REINFORCE': (
            (0.0752, 0.304, 0.735, 0.997),
            (-0.0195, 0.133, 0.438, 0.969),
            (0.0865, 0.316, 0.743, 0.999),
            (0.96, 0.998, 1.0, 1.0),
        ),
        'ARM': (
            (0.139, 0.455, 0.864, 0.998),
            (0.0156, 0.22, 0.623, 0.994),
            (0.18, 0.369, 0.79, 0.999),
            (0.96, 0.998, 1.0, 1.0),
        ),
        'Concrete-t=0.1': (
            (0.015, 0.0368, 0.0908, 0.565),
            (-0.0982, -0.111, 0.0641, 0.929),
            (0.19, 0.338, 0.697, 0.996),
            (0.965, 0.998, 1.0, 1.0),
        ),
        'Concrete-t=1': (
            (0.0517, 0.19, 0.232, 0.229),
            (-0.0951, -0.052, -0.0596, -0.0604),
            (0.357, 0.686, 0.792, 0.8),
            (0.963, 0.987, 0.989, 0.989),
        ),
        'tanh': (
            (-0.389, -0.389, -0.389, -0.389),
            (0.11, 0.11, 0.11, 0.11),
            (0.92, 0.92, 0.92, 0.92),
            (0.979, 0.979, 0.979, 0.979),
        ),
        'ST': (
            (0.207, 0.515, 0.783, 0.851),
            (0.0404, 0.179, 0.504, 0.811),
            (0.133, 0.144, 0.388, 0.766),
            (0.96, 0.998, 1.0, 1.0),
        ),
        'PSA': (
            (0.448, 0.87, 0.969, 0.98),
            (0.183, 0.626, 0.933, 0.995),
            (0.394, 0.813, 0.989, 1.0),
            (0.965, 0.998, 1.0, 1.0),
        ),
    },
}


def paper_table() -> pd.DataFrame:
    """The published values as a tidy table: checkpoint, method, estimator (spec), group, metric, M, paper."""
    rows = []
    for (chk, metric), methods in VALUES.items():
        for method, per_group in methods.items():
            for group, values in zip(GROUPS, per_group, strict=True):
                for m, v in zip(M_GRID[metric], values, strict=True):
                    rows.append((chk, method, METHOD_SPECS[method], group, metric, m, v))
    return pd.DataFrame(rows, columns=["checkpoint", "method", "estimator", "group", "metric", "M", "paper"])
