//! The frame stamp: a machine-readable row of blocks carrying a frame id and
//! publish time, drawn into frames by the test pattern and decoded downstream
//! (even after H.264 and RTSP) to measure latency and loss.
#![forbid(unsafe_code)]
