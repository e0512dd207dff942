"""The examples run against a stream: the motion detectors (numpy and OpenCV)
report the square crossing an ffmpeg-rendered clip that publish_video.py
publishes."""

import pytest

from conftest import PY, python_child_env, unique
from test_rust_consumers import EXAMPLES, clip, publisher  # noqa: F401 (fixture)


@pytest.mark.parametrize("example", ["motion_numpy.py", "motion_opencv.py"])
def test_motion_example_sees_the_moving_square(children, clip, example):  # noqa: F811
    name = unique("ex")
    tuning = ["--min-fraction", "0.001"] if example == "motion_numpy.py" else []
    det = children([PY, EXAMPLES / example, "--name", name, "--frames", 60, *tuning], env=python_child_env())
    publisher(children, name, clip, "--loop")
    line = det.wait_line(lambda ln: " motion " in ln, "a motion line")
    print(example, "->", line)
    assert det.wait() == 0, det.output()
    assert "error" not in det.output()
