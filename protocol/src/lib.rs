//! The host↔agent protocol of ironpod.
//!
//! **Transport**: one vsock stream per client (the host reaches the guest through the VMM's
//! hybrid unix socket, `CONNECT <AGENT_VSOCK_PORT>`). **Framing**: a 4-byte big-endian length
//! followed by that many bytes of JSON; frames larger than [`MAX_FRAME`] are refused before
//! anything is allocated. **Session**: the host sends [`Hello`]; the agent answers
//! [`HelloReply`] (an error closes the connection); then each [`Request`] carries an id and
//! gets exactly one [`Response`] with the same id: a typed result or a typed [`AgentError`].
//!
//! Why serde JSON frames rather than ttrpc/protobuf: the message rate is low (control
//! operations, not data — container stdio will use raw vsock streams of its own), JSON frames
//! are easy to inspect when debugging a guest, serde is already how every other ironpod
//! structure is (de)serialized, and the schema lives in one Rust file shared by both ends, so
//! the two sides cannot drift apart. Byte payloads are base64 strings.

mod archive;
mod container;
mod frame;
mod messages;
mod network;

pub use archive::{copy_base, Change, ChangeKind, PathStat, WriteArchive, ARCHIVE_CHUNK};
pub use frame::{
    read_frame, recv, send, send_chunks, write_frame, ChunkReader, ChunkWriter, FrameError,
    MAX_FRAME,
};
pub use messages::*;
pub use network::{NetInterface, NetworkConfig};

/// Version of this protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 2;
/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The virtio-fs tag of the pod's share: host directories (volumes) the pod's containers
/// bind-mount. The kernel command-line word `ironpod.share` asks the agent to mount it at
/// boot; otherwise it is mounted when a container's mount needs it.
pub const SHARE_TAG: &str = "ironpod-share";

/// Where the agent mounts the pod's share in the guest.
pub const SHARE_DIR: &str = "/run/ironpod/shared";

/// Where the agent mounts a pod's writable disk (`<this>/<serial>`).
pub const WRITABLE_DIR: &str = "/run/ironpod/rw";

/// An OCI bind mount's option naming a path inside its source to mount instead, which the
/// agent resolves without ever leaving the source (symbolic links that point out of it are
/// refused) and creates as directories when missing: a Kubernetes `subPath`.
pub const SUBPATH_OPTION: &str = "x-ironpod.subpath=";
