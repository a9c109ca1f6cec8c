//! A registry's `WWW-Authenticate` challenges, through the parser oci-client reads them with
//! (`http-auth`), and the bearer realm and service taken from them as oci-client does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for challenge in http_auth::parser::ChallengeParser::new(s).take(64) {
        let Ok(c) = challenge else { break };
        if c.scheme.eq_ignore_ascii_case("bearer") {
            for (k, v) in &c.params {
                if *k == "realm" || *k == "service" || *k == "scope" {
                    let _ = v.to_unescaped();
                }
            }
        }
    }
});
