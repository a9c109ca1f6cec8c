//! The agent protocol, both directions: frames as they arrive on a vsock stream, decoded as
//! every message the host or the agent reads; what decodes must encode and decode again to
//! the same message.
#![no_main]

use ironpod_protocol::{read_frame, Hello, HelloReply, Request, Response};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(body: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(msg) = serde_json::from_slice::<T>(body) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&msg).expect("encode"))
            .expect("what decoded must decode again");
        assert_eq!(msg, again);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut stream = std::io::Cursor::new(data);
    while let Ok(body) = read_frame(&mut stream) {
        round_trip::<Hello>(&body);
        round_trip::<HelloReply>(&body);
        round_trip::<Request>(&body);
        round_trip::<Response>(&body);
    }
});
