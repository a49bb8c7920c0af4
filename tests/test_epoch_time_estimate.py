"""EpochTimeEstimate: one estimate after the first timed steps, the CPU hint when it is slow
and no GPU is visible; driven with a fake clock and Keras' callback calls, no model."""

import pytest

from mixem_tf.callbacks import EpochTimeEstimate, format_duration

pytestmark = pytest.mark.core


class _Clock:
    """A clock that moves only when the test says so."""

    now = 0.0

    def __call__(self):
        return self.now


def _train(callback, epochs=3, steps=10, initial_epoch=0, step_s=1.0):
    """Plays the callback calls of `model.fit(..., initial_epoch, epochs)`, each step taking
    `step_s` seconds (the first, compiling one, 100 s)."""
    callback.set_params({"epochs": epochs, "steps": steps, "verbose": 0})
    callback.clock = clock = _Clock()
    for epoch in range(initial_epoch, epochs):
        callback.on_epoch_begin(epoch)
        for batch in range(steps):
            clock.now += 100.0 if (epoch, batch) == (initial_epoch, 0) else step_s
            callback.on_train_batch_end(batch)
        callback.on_epoch_end(epoch, {})


def test_prints_one_estimate_after_the_first_steps(capsys):
    callback = EpochTimeEstimate(steps=4, gpu_visible=lambda: False)
    _train(callback, epochs=20, steps=300, initial_epoch=5, step_s=2.0)
    err = capsys.readouterr().err
    # 2 s a step → 600 s an epoch (not more than the 600 s threshold: no hint); 15 epochs left.
    assert err == ("estimated time: 10 min 0 s per epoch, 2 h 30 min for the 15 epoch(s) to "
                   "train (from 4 step(s) of 300)\n")
    assert callback.message == err.strip()


def test_a_slow_epoch_without_a_gpu_names_the_cpu_flags_and_the_readme(capsys):
    callback = EpochTimeEstimate(steps=3, gpu_visible=lambda: False)
    _train(callback, epochs=2, steps=400, step_s=2.0)
    err = capsys.readouterr().err
    assert err.startswith("estimated time: 13 min 20 s per epoch, 26 min 40 s for the 2 ")
    assert "--backbone convnet --image-size 32" in err and 'README, "Your own images"' in err
    assert err.count("\n") == 1


def test_no_hint_when_a_gpu_is_visible(capsys):
    _train(EpochTimeEstimate(steps=3, gpu_visible=lambda: True), steps=400, step_s=2.0)
    err = capsys.readouterr().err
    assert "13 min 20 s per epoch" in err and "GPU" not in err


def test_a_short_epoch_reports_at_its_end_from_the_steps_it_had(capsys):
    callback = EpochTimeEstimate(steps=5, gpu_visible=lambda: False)
    _train(callback, epochs=4, steps=3, step_s=0.5)  # 2 timed steps of 0.5 s
    assert capsys.readouterr().err == ("estimated time: 2 s per epoch, 6 s for the 4 "
                                       "epoch(s) to train (from 2 step(s) of 3)\n")


def test_a_one_step_epoch_gives_no_estimate(capsys):
    callback = EpochTimeEstimate(gpu_visible=lambda: False)
    _train(callback, epochs=3, steps=1)
    assert capsys.readouterr().err == "" and callback.message is None


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (59.6, "1 min 0 s"),
                                           (200, "3 min 20 s"), (7500, "2 h 5 min"),
                                           (90000, "25 h 0 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps"):
        EpochTimeEstimate(steps=0)
