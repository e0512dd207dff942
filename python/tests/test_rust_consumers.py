"""A Python writer publishing an ffmpeg-rendered clip (decoded by OpenCV, the
examples/publish_video.py program) is read by shmcast-detect and served by
shmcast-rtsp, which ffprobe then probes."""

import json
import subprocess
from pathlib import Path

import pytest

from conftest import PY, binary, python_child_env, unique

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s of 320x240 at 30 fps: a dark, noisy background with a small bright
    square crossing it, rendered by ffmpeg (H.264 in MP4)."""
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", "color=c=0x202020:s=320x240:r=30:d=4",
         "-f", "lavfi", "-i", "color=c=white:s=12x12:r=30:d=4",
         "-filter_complex", "[0][1]overlay=x='20+n*2':y='60+n':shortest=1,noise=alls=3:allf=t",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )
    return out


def publisher(children, name, clip, *extra):
    c = children([PY, EXAMPLES / "publish_video.py", "--name", name, *extra, clip], name=name,
                 env=python_child_env())
    c.wait_line("READY")
    return c


def test_detect_reads_every_frame_a_python_writer_publishes(children, clip):
    name = unique("det")
    det = children([binary("shmcast-detect"), "--name", name, "--events", "-", "--start", "oldest",
                    "--exit-on-close"], merge_stderr=False)
    pub = publisher(children, name, clip)
    line = pub.wait_line("published")
    published = int(line.split()[1])
    assert published == 120
    summary = json.loads(det.wait_line(lambda ln: '"type":"summary"' in ln.replace(" ", ""), "the summary"))
    assert det.stop() == 0
    print("detect summary:", summary)
    assert summary["frames"] + summary["lost"] == published
    assert summary["frames"] > 0
    # The square crossing the clip is seen: detect used the frames, not just counted them.
    assert summary["events"] >= 1, det.output()


def test_rtsp_serves_a_python_writer_and_ffprobe_sees_it(children, clip):
    name = unique("rtsp")
    publisher(children, name, clip, "--loop")
    rtsp = children([binary("shmcast-rtsp"), "--name", name, "--listen", "127.0.0.1:0"])
    line = rtsp.wait_line("serving")
    url = line[line.index("rtsp://"):].split()[0].strip('"')
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height", "-of", "json", url],
        capture_output=True, text=True,
    )
    assert probe.returncode == 0, probe.stderr + rtsp.output()
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
