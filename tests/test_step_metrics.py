"""StepMetrics: an epoch's sums kept on the device, read once per window, the first
non-finite step named."""
import pytest
import torch

from cocon.train.step_metrics import StepMetrics


class NonFinite(Exception):
    pass


def non_finite(step, values):
    return NonFinite(step, values)


def values(step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return {"loss": torch.rand((), generator=generator) * 10, "cpc/rgb": torch.rand((), generator=generator)}


def test_sums_are_the_host_sums_of_the_float32_values_and_read_once_per_window():
    metrics = StepMetrics(torch.device("cpu"), window=3, on_non_finite=non_finite)
    expected = {"loss": 0.0, "cpc/rgb": 0.0, "top1/rgb": 0.0}
    reads = []
    for step in range(7):
        step_values = {**values(step), "top1/rgb": torch.tensor(0.25, dtype=torch.float32)}
        for name, value in step_values.items():
            expected[name] += float(value)  # what the loop summed on the host before
        reads.append(metrics.add(step, step_values, values(step)))
    # read at the 3rd and the 6th step; the same numbers as the host's sums, exactly
    assert [read is not None for read in reads] == [False, False, True, False, False, True, False]
    assert metrics.read() == expected
    assert list(metrics.read()) == ["loss", "cpc/rgb", "top1/rgb"]


def test_a_resumed_epoch_goes_on_from_its_sums():
    whole = StepMetrics(torch.device("cpu"), 50, non_finite)
    first = StepMetrics(torch.device("cpu"), 50, non_finite)
    for step in range(5):
        whole.add(step, values(step), values(step))
        if step < 2:
            first.add(step, values(step), values(step))
    resumed = StepMetrics(torch.device("cpu"), 50, non_finite, resumed=first.read())
    assert resumed.read() == first.read()  # no step yet: the sums it resumed with
    for step in range(2, 5):
        resumed.add(step, values(step), values(step))
    assert resumed.read() == whole.read()
    with pytest.raises(ValueError, match="resumed sums of"):
        StepMetrics(torch.device("cpu"), 50, non_finite, resumed={"loss": 1.0}).add(0, values(0), values(0))


@pytest.mark.parametrize("window", [2, 50], ids=["found-when-the-window-fills", "found-when-read"])
def test_the_first_non_finite_step_is_named_with_its_values(window):
    metrics = StepMetrics(torch.device("cpu"), window, non_finite)
    with pytest.raises(NonFinite) as raised:
        for step in range(10, 20):
            watched = values(step)
            if step >= 13:  # from step 13 on, as weights a NaN gradient made give
                watched["cpc/rgb"] = torch.tensor(float("nan") if step == 13 else float("inf"))
                watched["loss"] = watched["loss"] + watched["cpc/rgb"]
            metrics.add(step, watched, watched)
        metrics.read()
    step, named = raised.value.args
    assert step == 13 and list(named) == ["loss", "cpc/rgb"]
    assert named["loss"] != named["loss"] and named["cpc/rgb"] != named["cpc/rgb"]  # NaN
