//! The run options a user (or a compose file, through the API) writes: `-v`, `-p` and
//! `--memory` values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = ironpod_volumes::mounts::parse(s);
    if let Ok(ports) = ironpod_net::ports::parse_publish(s) {
        assert!(!ports.is_empty());
    }
    if let Ok(bytes) = ironpod_pods::spec::parse_size(s) {
        assert!(bytes <= u64::MAX / 2);
    }
});
