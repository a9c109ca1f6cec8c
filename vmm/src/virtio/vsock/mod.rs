//! virtio-vsock
