// The bytes lent by `Frame::read` cannot outlive the closure, so they can
// never be used after the seqlock check that `read` makes when it returns.
use shm_proto::{Next, Reader, ReaderOptions};
use std::time::Duration;

fn main() {
    let mut r = Reader::open("x", &ReaderOptions::default()).unwrap();
    if let Next::Frame(f) = r.next(Duration::from_secs(1)) {
        let leaked: Option<&[u8]> = f.read(|bytes| bytes);
        println!("{:?}", leaked);
    }
}
