//! What a registry or an image archive hands over: OCI manifests, indexes and image
//! configurations, digests and image references.
#![no_main]

use ironpod_images::{Digest, ImageName};
use libfuzzer_sys::fuzz_target;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ImageManifest>(data);
    let _ = serde_json::from_slice::<ImageIndex>(data);
    if let Ok(c) = serde_json::from_slice::<ImageConfiguration>(data) {
        // What a container's spec is made from.
        let _ = c.config().as_ref().map(|c| (c.env(), c.entrypoint(), c.cmd(), c.user()));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = Digest::parse(s) {
            assert_eq!(
                Digest::parse(&d.to_string()).map(|e| e.to_string()).ok(),
                Some(d.to_string())
            );
        }
        if let Ok(n) = ImageName::parse(s) {
            let _ = ImageName::parse(&n.full());
        }
    }
});
