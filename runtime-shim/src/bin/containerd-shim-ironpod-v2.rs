//! `containerd-shim-ironpod-v2`: the containerd runtime `io.containerd.ironpod.v2`.

fn main() {
    containerd_shim::run::<ironpod_runtime::shim::IronpodShim>(
        ironpod_runtime::shim::RUNTIME_ID,
        Some(ironpod_runtime::shim::config()),
    );
}
