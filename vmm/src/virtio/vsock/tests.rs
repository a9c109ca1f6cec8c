//! Unit tests of the vsock device through real guest memory.
