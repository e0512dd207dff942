//! Property test of header validation over random bytes and random mutations
//! of a valid header: `decode` never panics, and whatever it accepts has every
//! offset inside the object (the body is `header::fuzz_decode`).

use proptest::prelude::*;
use shm_proto::format::{PixelFormat, VideoFormat};
use shm_proto::header::{self, Identity, fuzz_decode};
use shm_proto::layout::{Geometry, MAGIC, PAGE};

fn valid() -> (Vec<u8>, u64) {
    let f = VideoFormat::new(640, 480, PixelFormat::Nv12, 30, 1).unwrap();
    let g = Geometry::compute(8, f.frame_size, PAGE).unwrap();
    let mut h = header::encode(&g, &f, &Identity { pid: 1, epoch: 2, start_unix_ns: 3 }, false, None);
    h.magic = MAGIC;
    (h.to_bytes().to_vec(), g.total_size)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), size in any::<u64>()) {
        fuzz_decode(&bytes, size);
    }

    #[test]
    fn mutated_valid_header(muts in proptest::collection::vec((0usize..256, any::<u8>()), 1..8), dsize in -3i64..3) {
        let (mut b, size) = valid();
        for (i, v) in muts {
            let i = i % b.len();
            b[i] = v;
        }
        let size = (size as i64 + dsize * 4096) as u64;
        fuzz_decode(&b, size);
    }

    #[test]
    fn mutated_words(field in 0usize..32, v in prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX), Just(1u64 << 40), Just(4096u64)]) {
        let (mut b, size) = valid();
        let off = (field * 8).min(b.len() - 8);
        b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        fuzz_decode(&b, size);
    }
}
