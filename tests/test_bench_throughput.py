"""bench/train_throughput.py times each method's real training step."""

import pytest

from mixem_tf.methods import METHODS, method_class

pytestmark = pytest.mark.core


# Under JAX (the GPU benches' backend) the default method's step is enough: every method's
# own train step is a core test of its own.
@pytest.mark.parametrize("method", [m if m == "mixem" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(METHODS)])
def test_the_throughput_bench_trains_the_methods_own_model_and_loss(method):
    from bench.train_throughput import measure

    row = measure(method, "convnet", 8, 1, batch_size=8, steps=2, warmup=0)
    cls = method_class(method)
    assert row["model"] == cls.__name__
    assert set(cls.loss_names) <= set(row["logged"])  # the method's own terms were computed
    assert row["pairs_per_s"] > 0 and row["first_step_s"] > 0 and row["peak_rss_mib"] > 0


def test_a_case_must_name_backbone_size_and_channels(capsys):
    from bench.train_throughput import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--cases", "resnet18:32"])
    assert exit_info.value.code == 2
    assert "BACKBONE:SIZE:CHANNELS" in capsys.readouterr().err
