//! `containerd-shim-ironpod-v2`: the containerd runtime `io.containerd.ironpod.v2`.

fn main() {
    containerd_shim::run::<ironpod_shim::IronpodShim>(
        ironpod_shim::RUNTIME_ID,
        Some(ironpod_shim::config()),
    );
}
