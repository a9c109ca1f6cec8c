//! virtio-blk
